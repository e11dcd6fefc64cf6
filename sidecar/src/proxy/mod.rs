//! Protocol glue: protocol detection, HTTP (hyper) forwarding, opaque TCP copy.

pub mod body;
pub mod client;
pub mod detect;
pub mod drain;
pub mod error;
pub mod guard;
pub mod headers;
pub mod io;
pub mod limit;
pub mod pool;
pub mod server;
pub mod tcp;
pub mod upgrade;

pub use body::ProxyBody;
pub use client::Clients;
pub use detect::{DEFAULT_DETECT_TIMEOUT, Detected, detect, detect_unless_skipped};
pub use drain::{Drain, DrainTrigger};
pub use error::{Cause, MESH_ERROR};
pub use guard::DEFAULT_MAX_HEADER_BYTES;
pub use io::Prefixed;
