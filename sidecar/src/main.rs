//! Binary entry point: `mesh-sidecar init` installs the interception rules; otherwise parse the
//! config once, install tracing and run until shutdown.

use std::process::ExitCode;

use clap::Parser;
use mesh_sidecar::config::{Config, ConfigError};
use mesh_sidecar::init::{InitArgs, InitOutcome, run_init};
use mesh_sidecar::telemetry::LogControl;

/// `mesh-sidecar init [flags]`: the init-container step of an injected workload.
#[derive(Parser)]
#[command(
    name = "mesh-sidecar init",
    about = "Install (or remove) the traffic-interception rules in this network namespace"
)]
struct InitCli {
    #[command(flatten)]
    init: InitArgs,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("init") {
        let cli = InitCli::parse_from(std::env::args().skip(1));
        return match run_init(cli.init) {
            Ok(InitOutcome::DryRun(rules)) => {
                print!("{rules}");
                ExitCode::SUCCESS
            }
            Ok(outcome) => {
                println!("mesh-sidecar init: {outcome:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mesh-sidecar init: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::from_process() {
        Ok(cfg) => cfg,
        // --help, --version and unknown flags print clap's own message and exit code.
        Err(ConfigError::Usage(e)) => e.exit(),
        Err(e) => {
            eprintln!("mesh-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match LogControl::init(&cfg.log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("mesh-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    match mesh_sidecar::app::run(cfg, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mesh-sidecar failed");
            eprintln!("mesh-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}
