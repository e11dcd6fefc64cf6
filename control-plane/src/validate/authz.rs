//! Authorization policy validation: proto `AuthorizationPolicy` → domain `AuthzPolicy`.

use mesh_proto::types::v1 as pb;

use super::cluster::unknown_enum;
use super::{Result, ValidationError, bounded, http_path, identity_pattern, ports, service_name};
use crate::model::{AuthzAction, AuthzPolicy, AuthzRule};

impl TryFrom<pb::AuthorizationPolicy> for AuthzPolicy {
    type Error = ValidationError;

    fn try_from(p: pb::AuthorizationPolicy) -> Result<Self> {
        let service = service_name("policy.service", &p.service)?;
        let default_action = match pb::AuthzAction::try_from(p.default_action) {
            Ok(pb::AuthzAction::Unspecified | pb::AuthzAction::Allow) => AuthzAction::Allow,
            Ok(pb::AuthzAction::Deny) => AuthzAction::Deny,
            Err(_) => return Err(unknown_enum("policy.default_action", p.default_action)),
        };
        bounded("policy.allow", p.allow.len())?;
        let allow = p
            .allow
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let f = format!("policy.allow[{i}]");
                bounded(&format!("{f}.sources"), r.sources.len())?;
                let sources = r
                    .sources
                    .iter()
                    .enumerate()
                    .map(|(j, s)| identity_pattern(&format!("{f}.sources[{j}]"), s))
                    .collect::<Result<Vec<_>>>()?;
                let path_prefix = match r.path_prefix.as_str() {
                    "" => None,
                    p => Some(http_path(&format!("{f}.path_prefix"), p)?),
                };
                Ok(AuthzRule {
                    sources,
                    ports: ports(&format!("{f}.ports"), &r.ports)?,
                    path_prefix,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AuthzPolicy {
            service,
            default_action,
            allow,
        })
    }
}
