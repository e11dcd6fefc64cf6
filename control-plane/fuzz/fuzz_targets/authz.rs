//! Fuzzes proto `AuthorizationPolicy` → domain `AuthzPolicy`: decoded bytes never panic the conversion, and accepted
//! input converts back and re-validates to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control_plane::{encode, model};
use mesh_proto::types::v1 as pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = pb::AuthorizationPolicy::decode(data) else {
        return;
    };
    if let Ok(domain) = model::AuthzPolicy::try_from(msg) {
        let again = model::AuthzPolicy::try_from(encode::authz(&domain)).expect("accepted input re-validates");
        assert_eq!(again, domain);
    }
});
