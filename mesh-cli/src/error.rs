//! The CLI's error: one line for the operator, and the exit code class it belongs to.

use std::process::ExitCode;

/// Exit code for bad input: flags, values, files, unknown services (clap uses 2 too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the control plane (or a proxy) cannot be reached, refuses the credentials or
/// fails the call.
pub const EXIT_SERVER: u8 = 3;
/// Exit code for `--wait` ending in a NACK or a timeout.
pub const EXIT_WAIT: u8 = 4;

/// Every failure ends the process with one line saying what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Server(String),
    #[error("{0}")]
    Wait(String),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(msg.into())
    }

    pub fn server(msg: impl Into<String>) -> Self {
        Self::Server(msg.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Server(_) => EXIT_SERVER,
            Self::Wait(_) => EXIT_WAIT,
        })
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
