//! Starts the data-path listeners (inbound, outbound, fixed TCP ports) on the data runtime.

use tokio::net::TcpListener;

use crate::config::{Config, TcpForward};
use crate::proxy::Drain;
use crate::state::StateHandle;

/// Spawns every data-path listener. Each stops accepting when its drain is signalled.
pub(super) fn spawn_data_path(
    _cfg: &Config,
    _state: &StateHandle,
    inbound: TcpListener,
    inbound_drain: Drain,
    outbound: TcpListener,
    forwards: Vec<(TcpForward, TcpListener)>,
    outbound_drain: Drain,
) {
    // Until the proxy serve functions are wired, hold the listeners open (their ports stay
    // reserved and announced) and release them on drain.
    tokio::spawn(hold(inbound, inbound_drain));
    tokio::spawn(hold(outbound, outbound_drain.clone()));
    for (_, l) in forwards {
        tokio::spawn(hold(l, outbound_drain.clone()));
    }
}

async fn hold(listener: TcpListener, mut drain: Drain) {
    drain.signaled().await;
    drop(listener);
}
