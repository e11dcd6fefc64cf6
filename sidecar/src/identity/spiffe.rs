//! SPIFFE identities: the shared wire format from mesh-proto.

pub use mesh_proto::spiffe::{SpiffeError, SpiffeId, TrustDomain};
