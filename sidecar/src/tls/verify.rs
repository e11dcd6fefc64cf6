//! Certificate verifiers: chains against the current trust bundle, plus the SPIFFE ID checks rustls cannot do.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{CertStore, SpiffeId};

/// Why a peer certificate's identity is unacceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerCertError {
    #[error("peer certificate does not parse")]
    Unparseable,
    #[error("peer certificate carries no SPIFFE ID (URI SAN)")]
    NoSpiffeId,
    #[error("peer certificate carries more than one URI SAN")]
    SeveralUris,
    #[error("peer certificate URI SAN {0:?} is not a valid SPIFFE ID")]
    BadSpiffeId(String),
    #[error("peer presented identity {presented}, but {expected} was expected for this endpoint")]
    Mismatch {
        presented: Box<SpiffeId>,
        expected: Box<SpiffeId>,
    },
}

/// Verifies a client's chain against the bundle and requires a SPIFFE ID in it.
#[derive(Debug)]
pub struct MeshClientVerifier {
    store: Arc<CertStore>,
}

/// Verifies a server's chain against the bundle and that its SPIFFE ID is `expected`.
#[derive(Debug)]
pub struct MeshServerVerifier {
    store: Arc<CertStore>,
    expected: SpiffeId,
}

/// The single SPIFFE ID (URI SAN) in a leaf certificate.
pub fn peer_spiffe_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, PeerCertError> {
    let (_, cert) = X509Certificate::from_der(cert).map_err(|_| PeerCertError::Unparseable)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PeerCertError::Unparseable)?
        .ok_or(PeerCertError::NoSpiffeId)?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let uri = uris.next().ok_or(PeerCertError::NoSpiffeId)?;
    if uris.next().is_some() {
        return Err(PeerCertError::SeveralUris);
    }
    SpiffeId::parse(uri).map_err(|_| PeerCertError::BadSpiffeId(uri.to_owned()))
}

fn reject(e: PeerCertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn supported_schemes() -> Vec<SignatureScheme> {
    super::provider()
        .signature_verification_algorithms
        .supported_schemes()
}

// === impl MeshClientVerifier ===

impl MeshClientVerifier {
    pub fn new(store: Arc<CertStore>) -> Self {
        Self { store }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    /// No CA hints: they are optional in TLS 1.3, and the bundle can change between handshakes
    /// (the hints would have to be borrowed from one snapshot).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.store.trust_bundle();
        bundle
            .client_verifier()
            .verify_client_cert(end_entity, intermediates, now)?;
        peer_spiffe_id(end_entity).map_err(reject)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

// === impl MeshServerVerifier ===

impl MeshServerVerifier {
    pub fn new(store: Arc<CertStore>, expected: SpiffeId) -> Self {
        Self { store, expected }
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    /// The server name is ignored: mesh servers are named by SPIFFE ID, not DNS.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.store.trust_bundle();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            bundle.roots(),
            intermediates,
            now,
            super::provider().signature_verification_algorithms.all,
        )?;
        let presented = peer_spiffe_id(end_entity).map_err(reject)?;
        if presented != self.expected {
            return Err(reject(PeerCertError::Mismatch {
                presented: Box::new(presented),
                expected: Box::new(self.expected.clone()),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

/// Handshake signature checks with the mesh's crypto provider, shared by both verifiers.
fn tls12_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls12_signature(
        message,
        cert,
        dss,
        &super::provider().signature_verification_algorithms,
    )
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &super::provider().signature_verification_algorithms,
    )
}
