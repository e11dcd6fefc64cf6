//! Admin API client of the commands: connects with the flags of [`Global`] through
//! [`crate::access`], and turns gRPC failures into one-line errors with the fix.

use tonic::{Code, Status};

pub use crate::access::root_cause;
use crate::access::{AccessError, Sources};
use crate::cli::Global;
use crate::error::{CliError, Result};

pub type Client = crate::access::Admin;

/// A connected admin client and the address it talks to (for messages).
pub struct Admin {
    pub client: Client,
    pub addr: String,
}

/// The settings of one command: flags (with their `MESH_*` fallbacks) and `MESH_ADMIN_TOKEN`.
fn sources(global: &Global) -> Sources {
    Sources {
        data_dir: global.data_dir.clone(),
        admin: global.control_plane.clone(),
        ca_bundle: global.ca_bundle.clone(),
        token: std::env::var("MESH_ADMIN_TOKEN").ok(),
    }
}

/// Connects to the admin API (TLS verified with the trust bundle unless the URL is `http://`),
/// then loads the token.
pub async fn connect(global: &Global) -> Result<Admin> {
    let (client, target) = sources(global).connect().await.map_err(|e| match e {
        AccessError::BadUrl(..) => CliError::usage(e.to_string()),
        e => CliError::server(e.to_string()),
    })?;
    Ok(Admin {
        client,
        addr: target.shown,
    })
}

impl Admin {
    /// Maps a failed call to the right exit class with an operator hint.
    pub fn error(&self, what: &str, status: Status) -> CliError {
        status_error(&self.addr, what, status)
    }
}

pub fn status_error(addr: &str, what: &str, status: Status) -> CliError {
    let msg = status.message();
    // Plaintext HTTP/2 to a TLS port connects, then every call dies as a transport error —
    // or, when the server's TLS alert arrives first, as an HTTP/2 protocol error.
    if addr.starts_with("http://")
        && (msg.contains("transport error") || msg.contains("protocol error"))
    {
        return CliError::server(format!(
            "{what} failed on the control plane at {addr}: {msg} (does it serve TLS? the admin API does by default: use https://)"
        ));
    }
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists => {
            CliError::usage(format!("{what} refused by the control plane: {msg}"))
        }
        Code::NotFound => CliError::usage(format!(
            "{what}: {msg} (see `mesh-cli service list` and `mesh-cli route list`)"
        )),
        Code::Unauthenticated | Code::PermissionDenied => CliError::server(format!(
            "the control plane at {addr} rejected the admin token: {msg} (set MESH_ADMIN_TOKEN, or --data-dir to that control plane's data directory)"
        )),
        Code::Unavailable => CliError::server(format!(
            "cannot reach the control plane at {addr}: {} (is mesh-control-plane running? set --control-plane)",
            if msg.is_empty() {
                "unavailable".to_string()
            } else {
                msg.to_string()
            }
        )),
        Code::DeadlineExceeded => CliError::server(format!(
            "{what}: the control plane at {addr} did not answer in time"
        )),
        code => CliError::server(format!(
            "{what} failed on the control plane at {addr}: {code:?}: {msg}"
        )),
    }
}
