//! Admin HTTP server: /ready /live /metrics /config_dump /clusters /drain /logging.

mod health;

pub use health::Health;
