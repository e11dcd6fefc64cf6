//! Admin API client: finds the control plane and its token, and turns gRPC failures into
//! one-line errors with the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_proto::admin::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::cli::Global;
use crate::error::{CliError, Result};

/// The control plane's default admin address (ARCHITECTURE.md).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15011";

/// A reachable control plane answers a connect within milliseconds; 3 s bounds a black-holed
/// address without failing a busy one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Every admin call is a small unary request; 10 s only guards against a hung server.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub type Client = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A connected admin client and the address it talks to (for messages).
pub struct Admin {
    pub client: Client,
    pub addr: String,
}

/// The data dir: `--data-dir`/`MESH_DATA_DIR`, else `$HOME/.mesh/control-plane`.
pub fn data_dir(global: &Global) -> PathBuf {
    global.data_dir.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        Path::new(&home).join(".mesh/control-plane")
    })
}

/// `--control-plane`, else `admin` from `<data-dir>/addrs.json`, else the default port.
pub fn admin_addr(global: &Global) -> String {
    if let Some(a) = &global.control_plane {
        return a.clone();
    }
    std::fs::read(data_dir(global).join("addrs.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("admin").and_then(|a| a.as_str()).map(str::to_string))
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string())
}

/// `MESH_ADMIN_TOKEN`, else `<data-dir>/admin-token`.
fn token(global: &Global) -> Result<String> {
    if let Ok(t) = std::env::var("MESH_ADMIN_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let path = data_dir(global).join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => Err(CliError::server(format!(
            "{} is empty (set MESH_ADMIN_TOKEN, or --data-dir to the control plane's data directory)",
            path.display()
        ))),
        Err(e) => Err(CliError::server(format!(
            "no admin token: MESH_ADMIN_TOKEN is unset and {} cannot be read: {e} (set MESH_ADMIN_TOKEN, or --data-dir to the control plane's data directory)",
            path.display()
        ))),
    }
}

/// Connects first (an unreachable control plane is the likelier problem), then loads the token.
pub async fn connect(global: &Global) -> Result<Admin> {
    let addr = admin_addr(global);
    let uri = if addr.contains("://") {
        addr.clone()
    } else {
        format!("http://{addr}")
    };
    let unreachable = |detail: String| {
        CliError::server(format!(
            "cannot reach the control plane at {addr}: {detail} (is mesh-control-plane running? set --control-plane)"
        ))
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| {
            CliError::usage(format!(
                "{addr:?} is not an address: {e} (use HOST:PORT, like 127.0.0.1:15011)"
            ))
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(root_cause(&e)))?;
    let token = token(global)?;
    let value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
        CliError::server(
            "the admin token contains characters not allowed in a header (regenerate it)",
        )
    })?;
    Ok(Admin {
        client: AdminClient::with_interceptor(channel, Bearer(value)),
        addr,
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

/// The innermost error's text: "Connection refused (os error 111)" instead of "transport error".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string();
    // "Connection refused (os error 111)" → "connection refused".
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => s,
    }
}
