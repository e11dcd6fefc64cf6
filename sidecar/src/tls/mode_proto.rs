//! Conversion of the resources' `TlsMode` into the inbound mode.

use mesh_proto::types::v1::TlsMode;

use super::server::InboundMode;

/// The `tls_mode` value is not a known `TlsMode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tls_mode {0}")]
pub struct UnknownTlsMode(pub i32);

impl TryFrom<i32> for InboundMode {
    type Error = UnknownTlsMode;

    /// Unspecified means strict: meshed traffic is encrypted unless an operator opts out.
    fn try_from(v: i32) -> Result<Self, UnknownTlsMode> {
        match TlsMode::try_from(v) {
            Ok(TlsMode::Unspecified | TlsMode::Strict) => Ok(InboundMode::Strict),
            Ok(TlsMode::Permissive) => Ok(InboundMode::Permissive),
            Ok(TlsMode::Disabled) => Ok(InboundMode::Disabled),
            Err(_) => Err(UnknownTlsMode(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(InboundMode::try_from(0), Ok(InboundMode::Strict));
        assert_eq!(
            InboundMode::try_from(TlsMode::Permissive as i32),
            Ok(InboundMode::Permissive)
        );
        assert_eq!(
            InboundMode::try_from(TlsMode::Disabled as i32),
            Ok(InboundMode::Disabled)
        );
        assert_eq!(InboundMode::try_from(9), Err(UnknownTlsMode(9)));
    }
}
