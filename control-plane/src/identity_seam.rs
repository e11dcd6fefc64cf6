//! The identity service seam (`mesh.identity.v1.Identity`). Certificate issuance arrives with
//! the mTLS work; until then every call answers `Unimplemented`. CA material will be kept in
//! the store's `Table::Ca`, through the same `Store` as everything else.

use mesh_proto::identity::v1::identity_server::Identity;
use mesh_proto::identity::v1::{CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
pub struct IdentityService;

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        _: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        Err(Status::unimplemented(
            "certificate issuance is not implemented by this control plane yet",
        ))
    }
}
