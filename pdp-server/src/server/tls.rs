//! TLS and mutual TLS from PEM files (rustls with the ring provider): a tonic configuration for
//! the gRPC server and a rustls acceptor for the HTTP server. Off unless a certificate is set.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::ServeError;
use crate::config::PdpConfig;

/// TLS for both servers.
#[derive(Clone)]
pub struct Tls {
    /// For tonic.
    pub grpc: ServerTlsConfig,
    /// For the HTTP server.
    pub http: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("bad certificate PEM: {e}")))
}

/// Load TLS settings, if configured.
pub fn load(config: &PdpConfig) -> Result<Option<Tls>, ServeError> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let mut grpc = ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem));

    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match &config.tls_client_ca {
        Some(ca_path) => {
            let ca_pem = read(ca_path)?;
            grpc = grpc.client_ca_root(Certificate::from_pem(&ca_pem));
            let mut roots = RootCertStore::empty();
            for cert in certs(&ca_pem)? {
                roots
                    .add(cert)
                    .map_err(|e| ServeError::Tls(format!("bad client CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ServeError::Tls(format!("bad client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ServeError::Tls(format!("bad key PEM: {e}")))?
        .ok_or_else(|| ServeError::Tls("no private key in PDP_TLS_KEY".into()))?;
    let mut http = builder
        .with_single_cert(certs(&cert_pem)?, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Tls {
        grpc,
        http: TlsAcceptor::from(Arc::new(http)),
    }))
}
