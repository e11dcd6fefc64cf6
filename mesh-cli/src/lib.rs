//! mesh-cli: the operator command line (library part, so tests can drive the pure pieces).

pub mod access;
pub mod cli;
mod client;
mod commands;
pub mod demo;
mod enums;
pub mod error;
pub mod inject;
pub mod output;
mod proxy_http;
pub mod run;
pub mod spec;

use std::process::ExitCode;

use clap::Parser;

use crate::error::EXIT_USAGE;

/// Parses the command line, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, even when the server's message spans several (regex errors do).
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("error: {}", line.join(" "));
            e.exit_code()
        }
    }
}

/// Help and version go to stdout with 0; a usage error becomes one line with exit code 2.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Printing help can fail only on a closed stdout; nothing useful to do then.
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.render().to_string();
    // clap's message spans several lines (message, list, usage, hint): keep what precedes the
    // usage block, joined into one line.
    let msg: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("{} (see --help)", msg.join(" "));
    ExitCode::from(EXIT_USAGE)
}
