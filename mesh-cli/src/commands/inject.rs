//! `inject` / `uninject`: read a manifest (file or stdin), rewrite it, print it.

use std::io::Read;

use crate::cli::{FileArg, InjectArgs};
use crate::error::{CliError, Result};
use crate::inject::{self, InjectConfig, InjectError, Outcome};

pub fn inject(args: &InjectArgs) -> Result<()> {
    let input = read(&args.file)?;
    let mut cfg = InjectConfig::for_version(env!("CARGO_PKG_VERSION"));
    if let Some(image) = &args.image {
        cfg.image = image.clone();
    }
    if let Some(url) = &args.discovery {
        cfg.control_plane = url.clone();
    }
    emit(inject::inject(&input, &cfg), &args.file)
}

pub fn uninject(args: &FileArg) -> Result<()> {
    let input = read(args)?;
    emit(inject::uninject(&input), args)
}

fn read(file: &FileArg) -> Result<String> {
    let mut s = String::new();
    if file.file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            CliError::usage(format!("cannot read the manifest from standard input: {e}"))
        })?;
    } else {
        s = std::fs::read_to_string(&file.file).map_err(|e| {
            CliError::usage(format!(
                "cannot read {}: {e} (pass an existing file, or `-f -` for stdin)",
                file.file.display()
            ))
        })?;
    }
    Ok(s)
}

/// Prints the rewritten manifest on stdout and the per-workload notes on stderr.
fn emit(outcome: std::result::Result<Outcome, InjectError>, file: &FileArg) -> Result<()> {
    let outcome = outcome.map_err(|e| CliError::usage(format!("{}: {e}", file.file.display())))?;
    let yaml = outcome
        .to_yaml()
        .map_err(|e| CliError::server(e.to_string()))?;
    for note in &outcome.notes {
        eprintln!("{note}");
    }
    print!("{yaml}");
    Ok(())
}
