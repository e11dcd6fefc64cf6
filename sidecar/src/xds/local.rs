//! Listener settings from flags, merged beneath the control plane's Listener.

use std::sync::Arc;

use crate::state::{Listener, Name, TlsMode};

/// Listener settings from flags: the baseline before (and beneath) the control plane's Listener.
/// Flag port lists are added to the control plane's; the control plane's values win otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalListener {
    /// The proxy's own service; empty = no baseline (embedding and tests).
    pub name: String,
    pub app_ports: Vec<u16>,
    pub opaque_ports: Vec<u16>,
    pub server_first_ports: Vec<u16>,
}

// === impl LocalListener ===

impl LocalListener {
    /// The listener in force while the control plane has sent none.
    pub fn baseline(&self) -> Option<Arc<Listener>> {
        if self.name.is_empty() {
            return None;
        }
        Some(Arc::new(Listener {
            name: Name::from(self.name.as_str()),
            app_ports: self.app_ports.clone(),
            opaque_ports: self.opaque_ports.clone(),
            server_first_ports: self.server_first_ports.clone(),
            detect_timeout: None,
            tls_mode: TlsMode::default(),
            max_connections: None,
        }))
    }

    /// The control plane's listener with the flag settings added.
    pub(super) fn merge(&self, cp: &Listener) -> Arc<Listener> {
        let union = |a: &[u16], b: &[u16]| {
            let mut out = a.to_vec();
            out.extend(b.iter().filter(|p| !a.contains(p)));
            out
        };
        let mut l = cp.clone();
        if l.app_ports.is_empty() {
            l.app_ports = self.app_ports.clone();
        }
        l.opaque_ports = union(&cp.opaque_ports, &self.opaque_ports);
        l.server_first_ports = union(&cp.server_first_ports, &self.server_first_ports);
        Arc::new(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ResourceKind, StateHandle};
    use crate::xds::apply::{Change, apply};
    use mesh_proto::types::v1::{self as pb, Resource, resource::Kind};

    #[test]
    fn flag_ports_join_the_control_plane_listener_and_survive_its_removal() {
        let local = LocalListener {
            name: "web".into(),
            app_ports: vec![8080],
            opaque_ports: vec![5432],
            server_first_ports: vec![3306],
        };
        let state = StateHandle::default();
        let l = Resource {
            name: "web".into(),
            version: "1".into(),
            kind: Some(Kind::Listener(pb::Listener {
                name: "web".into(),
                opaque_ports: vec![6379],
                detect_timeout_ms: 300,
                ..Default::default()
            })),
        };
        let change = |updated, removed| Change {
            kind: ResourceKind::Listener,
            updated,
            removed,
        };
        apply(&state, &local, &[change(std::slice::from_ref(&l), &[])]).unwrap();
        let got = state.snapshot().listener.clone().unwrap();
        assert_eq!(got.opaque_ports, [6379, 5432]);
        assert_eq!(got.server_first_ports, [3306]);
        assert_eq!(got.app_ports, [8080]);
        assert_eq!(
            got.detect_timeout,
            Some(std::time::Duration::from_millis(300))
        );
        apply(&state, &local, &[change(&[], &["web".to_string()])]).unwrap();
        let got = state.snapshot().listener.clone().unwrap();
        assert_eq!(got.opaque_ports, [5432]);
        assert_eq!(got.detect_timeout, None);
    }
}
