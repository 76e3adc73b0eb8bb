//! TLS material for the gRPC TCP listener, checked with rustls before grpcio sees it, so a
//! missing, unreadable, malformed or mismatched file fails start-up with a message naming
//! the file (grpcio's own errors for bad PEM are opaque).

use std::path::Path;

use grpcio::{CertificateRequestType, ServerCredentials, ServerCredentialsBuilder};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ServerError;
use crate::config::GrpcConfig;

fn fail(what: &str, path: &str, problem: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{what} {path}: {problem}"))
}

fn read(what: &str, path: &str) -> Result<Vec<u8>, ServerError> {
    std::fs::read(Path::new(path)).map_err(|err| fail(what, path, err))
}

fn certificates(
    what: &str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| fail(what, path, format!("not a PEM certificate file ({err})")))?;
    if certs.is_empty() {
        return Err(fail(what, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// Credentials for `[grpc] tcp_*`: plain (`None`) without a certificate, TLS with
/// `tcp_tls_cert` and `tcp_tls_key`, and mutual TLS when `tcp_tls_ca` is also set.
pub fn credentials(grpc: &GrpcConfig) -> Result<Option<ServerCredentials>, ServerError> {
    if grpc.tcp_tls_cert.is_empty() && grpc.tcp_tls_key.is_empty() {
        if !grpc.tcp_tls_ca.is_empty() {
            return Err(ServerError::Tls(
                "tcp_tls_ca needs tcp_tls_cert and tcp_tls_key".into(),
            ));
        }
        return Ok(None);
    }
    if grpc.tcp_tls_cert.is_empty() || grpc.tcp_tls_key.is_empty() {
        return Err(ServerError::Tls(
            "tcp_tls_cert and tcp_tls_key must be set together".into(),
        ));
    }
    let cert_pem = read("certificate", &grpc.tcp_tls_cert)?;
    let key_pem = read("key", &grpc.tcp_tls_key)?;
    let certs = certificates("certificate", &grpc.tcp_tls_cert, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| {
        fail(
            "key",
            &grpc.tcp_tls_key,
            format!("not a PEM private key ({err})"),
        )
    })?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| ServerError::Tls(err.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|err| {
        fail(
            "key",
            &grpc.tcp_tls_key,
            format!("does not match certificate {} ({err})", grpc.tcp_tls_cert),
        )
    })?;
    let mut builder = ServerCredentialsBuilder::new().add_cert(cert_pem, key_pem);
    if !grpc.tcp_tls_ca.is_empty() {
        let ca_pem = read("CA", &grpc.tcp_tls_ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates("CA", &grpc.tcp_tls_ca, &ca_pem)? {
            roots
                .add(cert)
                .map_err(|err| fail("CA", &grpc.tcp_tls_ca, err))?;
        }
        builder = builder.root_cert(
            ca_pem,
            CertificateRequestType::RequestAndRequireClientCertificateAndVerify,
        );
    }
    Ok(Some(builder.build()))
}
