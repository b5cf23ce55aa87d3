//! Transport security: TLS and mutual TLS on both servers, and refusing to listen beyond
//! loopback without keys.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use velro_pdp::client::{ClientConfig, PdpClient};
use velro_pdp::proto;

use crate::support::{API_KEY, TestPdp};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        server: leaf(vec!["localhost".into(), "127.0.0.1".into()]),
        client: leaf(vec!["velro-api".into()]),
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn tls_pdp(pki: &Pki, mutual: bool) -> (TestPdp, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let cert = write(files.path(), "server.pem", &pki.server.0);
    let key = write(files.path(), "server.key", &pki.server.1);
    let ca = write(files.path(), "ca.pem", &pki.ca_pem);
    let ready_pki = Pki {
        ca_pem: pki.ca_pem.clone(),
        server: pki.server.clone(),
        client: pki.client.clone(),
    };
    let pdp = TestPdp::start_with(
        move |c| {
            c.tls_cert = Some(cert);
            c.tls_key = Some(key);
            if mutual {
                c.tls_client_ca = Some(ca);
            }
        },
        move |http| {
            Box::pin(async move {
                for _ in 0..1000 {
                    if let Ok(response) = https_get_at(http, &ready_pki, true, "/readyz").await
                        && response.starts_with("HTTP/1.1 200")
                    {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                panic!("the TLS PDP never became ready");
            })
        },
    )
    .await;
    (pdp, files)
}

fn grpc_client(pdp: &TestPdp, pki: &Pki, with_identity: bool) -> PdpClient {
    let mut config = ClientConfig::new(format!("https://localhost:{}", pdp.grpc.port()));
    config.api_key = Some(SecretString::from(API_KEY));
    config.tls_ca = Some(pki.ca_pem.clone().into_bytes());
    if with_identity {
        config.tls_identity = Some((
            pki.client.0.clone().into_bytes(),
            pki.client.1.clone().into_bytes(),
        ));
    }
    PdpClient::lazy(&config).unwrap()
}

/// GET `path` over HTTPS with a rustls client, optionally presenting the client certificate.
async fn https_get(
    pdp: &TestPdp,
    pki: &Pki,
    with_identity: bool,
    path: &str,
) -> Result<String, String> {
    https_get_at(pdp.http, pki, with_identity, path).await
}

async fn https_get_at(
    http: std::net::SocketAddr,
    pki: &Pki,
    with_identity: bool,
    path: &str,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_identity {
        let certs: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut pki.client.0.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pki.client.1.as_bytes())
            .unwrap()
            .unwrap();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(http)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    tls.read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_both_protocols() {
    let pki = pki();
    let (pdp, _files) = tls_pdp(&pki, false).await;
    let response = https_get(&pdp, &pki, false, "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut client = grpc_client(&pdp, &pki, false).authorizer();
    let status = client
        .check(proto::CheckRequest {
            principal: Some(proto::EntityRef {
                r#type: "User".into(),
                id: "x".into(),
            }),
            action: "project:view".into(),
            resource: Some(proto::EntityRef {
                r#type: "Project".into(),
                id: "y".into(),
            }),
            ..proto::CheckRequest::default()
        })
        .await
        .unwrap_err();
    // Reached the server over TLS and was answered (the ids are malformed on purpose).
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // Plain text is refused.
    assert!(
        crate::support::http()
            .get(pdp.url("/healthz"))
            .send()
            .await
            .is_err()
    );
    pdp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = pki();
    let (pdp, _files) = tls_pdp(&pki, true).await;
    let with = https_get(&pdp, &pki, true, "/healthz").await.unwrap();
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
    assert!(https_get(&pdp, &pki, false, "/healthz").await.is_err());

    let mut health =
        tonic_health::pb::health_client::HealthClient::new(grpc_client(&pdp, &pki, true).channel());
    assert!(
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_ok()
    );
    let mut anonymous = tonic_health::pb::health_client::HealthClient::new(
        grpc_client(&pdp, &pki, false).channel(),
    );
    assert!(
        anonymous
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_err()
    );
    pdp.stop().await;
}

#[test]
fn serving_beyond_loopback_without_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_velro-pdp"))
        .args([
            "serve",
            "--grpc-addr",
            "0.0.0.0:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("PDP_POLICIES", crate::policies_root())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("PDP_API_KEY and PDP_ADMIN_KEY"), "{stdout}");
}
