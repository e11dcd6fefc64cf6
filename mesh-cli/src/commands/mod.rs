//! Dispatch from the parsed command line to each command's implementation.

mod inject;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::error::Result;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inject(args) => inject::inject(&args),
        Command::Uninject(args) => inject::uninject(&args),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mesh-cli",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
