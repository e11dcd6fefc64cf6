//! Inbound: accept from peer sidecars, detect, forward to the local app.
