//! Fuzzes proto `Runtime` → domain `Runtime`: decoded bytes never panic the conversion, and accepted
//! input converts back and re-validates to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control_plane::{encode, model};
use mesh_proto::types::v1 as pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = pb::Runtime::decode(data) else {
        return;
    };
    if let Ok(domain) = model::Runtime::try_from(msg) {
        let again = model::Runtime::try_from(encode::runtime(&domain)).expect("accepted input re-validates");
        assert_eq!(again, domain);
    }
});
