//! A gRPC client of the PDP for other Velro programs (the app API, the load generator): one
//! channel, the caller's API key on every call, a per-call deadline. Retries and circuit breaking
//! are the caller's policy and live with the caller.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::authorizer_client::AuthorizerClient;
use crate::proto::policy_admin_client::PolicyAdminClient;

/// How to reach the PDP.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port`, or `https://…` for TLS.
    pub url: String,
    /// API key (or the admin key for `PolicyAdmin`).
    pub api_key: Option<SecretString>,
    /// Deadline of each call.
    pub timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// CA certificate (PEM) to trust for `https://`.
    pub tls_ca: Option<Vec<u8>>,
    /// Client certificate and key (PEM) for mTLS.
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientConfig {
    /// Defaults for `url`: no key, 2 s per call, 1 s to connect.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            tls_ca: None,
            tls_identity: None,
        }
    }
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct ApiKey {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").finish_non_exhaustive()
    }
}

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A connected client. Cheap to clone (one shared HTTP/2 channel).
#[derive(Debug, Clone)]
pub struct PdpClient {
    channel: Channel,
    key: ApiKey,
}

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL, key or TLS settings are invalid.
    #[error("invalid PDP client settings: {0}")]
    Config(String),
    /// The PDP could not be reached.
    #[error("cannot connect to the PDP: {0}")]
    Connect(#[from] tonic::transport::Error),
}

impl PdpClient {
    fn endpoint(config: &ClientConfig) -> Result<Endpoint, ClientError> {
        let mut endpoint = Endpoint::from_shared(config.url.clone())
            .map_err(|e| ClientError::Config(e.to_string()))?
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        if config.tls_ca.is_some() || config.tls_identity.is_some() {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &config.tls_ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &config.tls_identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(endpoint)
    }

    fn key(config: &ClientConfig) -> Result<ApiKey, ClientError> {
        let header = match &config.api_key {
            None => None,
            Some(key) => Some(
                format!("Bearer {}", key.expose_secret())
                    .parse()
                    .map_err(|_| ClientError::Config("the API key is not valid ASCII".into()))?,
            ),
        };
        Ok(ApiKey { header })
    }

    /// Connect now.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let channel = Self::endpoint(config)?.connect().await?;
        Ok(Self {
            channel,
            key: Self::key(config)?,
        })
    }

    /// A client that connects on first use (and reconnects after failures).
    pub fn lazy(config: &ClientConfig) -> Result<Self, ClientError> {
        let channel = Self::endpoint(config)?.connect_lazy();
        Ok(Self {
            channel,
            key: Self::key(config)?,
        })
    }

    /// The `Authorizer` service.
    pub fn authorizer(&self) -> AuthorizerClient<InterceptedService<Channel, ApiKey>> {
        AuthorizerClient::with_interceptor(self.channel.clone(), self.key.clone())
    }

    /// The `PolicyAdmin` service (needs the admin key).
    pub fn admin(&self) -> PolicyAdminClient<InterceptedService<Channel, ApiKey>> {
        PolicyAdminClient::with_interceptor(self.channel.clone(), self.key.clone())
    }

    /// The underlying channel (for health checks and reflection).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}
