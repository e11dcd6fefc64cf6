//! Runtime validation: proto `Runtime` → domain `Runtime`.

use mesh_proto::types::v1 as pb;

use super::{Result, ValidationError, ratio_ppm};
use crate::model::Runtime;

impl TryFrom<pb::Runtime> for Runtime {
    type Error = ValidationError;

    /// The trust bundle is owned by the CA and filled in when the resource is built; a bundle
    /// sent here is ignored.
    fn try_from(r: pb::Runtime) -> Result<Self> {
        Ok(Runtime {
            trace_sampling_ppm: ratio_ppm("runtime.trace_sampling_ratio", r.trace_sampling_ratio)?,
            access_log_ppm: ratio_ppm("runtime.access_log_ratio", r.access_log_ratio)?,
            trust_bundle_pem: Vec::new(),
        })
    }
}
