//! Fuzzes the discovery `Node` (and a service declaration built from it) → domain
//! conversion: decoded bytes never panic it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control_plane::validate::{node_from_proto, service_decl};
use mesh_proto::discovery::v1::Node;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(node) = Node::decode(data) else {
        return;
    };
    let _ = service_decl(&node.service, &node.namespace, &node.app_ports);
    let _ = node_from_proto(node);
});
