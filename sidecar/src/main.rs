//! Binary entry point: parse the config once, install tracing, run until shutdown.

use std::process::ExitCode;

use mesh_sidecar::config::{Config, ConfigError};
use mesh_sidecar::telemetry::LogControl;

fn main() -> ExitCode {
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
