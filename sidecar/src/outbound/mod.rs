//! Outbound: original destination or authority, route, balance, connect to the peer sidecar.
