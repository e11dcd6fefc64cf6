//! Mesh-wide runtime settings and the per-proxy inbound listener configuration.

use serde::{Deserialize, Serialize};

use super::TlsMode;

/// Ratios are kept in per-million so the type is `Eq` and hashes stably across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub trace_sampling_ppm: u32,
    pub access_log_ppm: u32,
    pub trust_bundle_pem: Vec<String>,
}

/// The inbound listener of one proxy, named after its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerConfig {
    pub name: String,
    pub app_ports: Vec<u16>,
    pub opaque_ports: Vec<u16>,
    pub server_first_ports: Vec<u16>,
    pub detect_timeout_ms: u64,
    pub tls_mode: TlsMode,
    pub max_connections: u32,
}

// === impl Runtime ===

/// One million: ratios travel as f64 but are stored as parts per million.
pub const PPM: u32 = 1_000_000;

impl Default for Runtime {
    /// Sample every trace and every access log line by default: a fresh mesh is usually being
    /// explored or debugged, where a missing trace costs more than the volume; operators lower
    /// both with `SetRuntime` once traffic is real. Errors are always logged regardless.
    fn default() -> Self {
        Self {
            trace_sampling_ppm: PPM,
            access_log_ppm: PPM,
            trust_bundle_pem: Vec::new(),
        }
    }
}

impl Runtime {
    pub fn trace_sampling_ratio(&self) -> f64 {
        f64::from(self.trace_sampling_ppm) / f64::from(PPM)
    }

    pub fn access_log_ratio(&self) -> f64 {
        f64::from(self.access_log_ppm) / f64::from(PPM)
    }
}
