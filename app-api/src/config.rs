//! The API's typed configuration: command-line flags with environment variables behind them and
//! defaults that run the embedded mode (DESIGN §3, §7). Secrets are `SecretString`, never logged.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use secrecy::SecretString;

/// `velro-api` settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "velro-api", version, about = "Velro product REST API")]
pub struct ApiConfig {
    /// Listen address; port 0 picks a free port.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The PDP's gRPC URL; unset starts an embedded PDP on a loopback port.
    #[arg(long, env = "PDP_URL")]
    pub pdp_url: Option<String>,
    /// Key presented to a remote PDP (`Authorization: Bearer`).
    #[arg(long, env = "PDP_API_KEY", hide_env_values = true)]
    pub pdp_api_key: Option<SecretString>,
    /// Per-call PDP deadline, milliseconds.
    #[arg(long, env = "PDP_TIMEOUT_MS", default_value_t = 1000)]
    pub pdp_timeout_ms: u64,
    /// Policies root of the embedded PDP.
    #[arg(long, env = "PDP_POLICIES", default_value = "./policies")]
    pub policies: PathBuf,
    /// `sqlite://…` or `postgres://…`; default `sqlite://<DATA_DIR>/velro.db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Redis for rate limits (and the embedded PDP's shared cache); unset = in-memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,
    /// Data folder: database, media, audit log, keys.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Access-token signing secret (at least 64 bytes); unset = generated once under
    /// `<DATA_DIR>/keys/jwt-secret`. Replicas must share it.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// Public base URL of this API (signed media URLs point here); default `http://<addr>`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Access-token lifetime, seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECONDS", default_value_t = 900)]
    pub access_ttl_seconds: u64,
    /// Refresh-token lifetime, seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECONDS", default_value_t = 30 * 24 * 3600)]
    pub refresh_ttl_seconds: u64,
    /// Invitation lifetime, seconds.
    #[arg(long, env = "INVITATION_TTL_SECONDS", default_value_t = 7 * 24 * 3600)]
    pub invitation_ttl_seconds: u64,
    /// Credits granted on registration.
    #[arg(long, env = "SIGNUP_CREDITS", default_value_t = 1000)]
    pub signup_credits: i64,
    /// Requests per minute per signed-in user.
    #[arg(long, env = "RATE_LIMIT_USER_PER_MINUTE", default_value_t = 100)]
    pub rate_user: u32,
    /// Requests per minute per client IP.
    #[arg(long, env = "RATE_LIMIT_IP_PER_MINUTE", default_value_t = 500)]
    pub rate_ip: u32,
    /// Generation creates per minute per user.
    #[arg(long, env = "RATE_LIMIT_GENERATIONS_PER_MINUTE", default_value_t = 10)]
    pub rate_generations: u32,
    /// Generation provider: `local` (offline), `fal`, or `auto` (`fal` when `FAL_KEY` is set).
    #[arg(long, env = "GENERATION_PROVIDER", default_value = "auto")]
    pub generation_provider: String,
    /// FAL API key.
    #[arg(long, env = "FAL_KEY", hide_env_values = true)]
    pub fal_key: Option<SecretString>,
    /// FAL queue API base URL.
    #[arg(long, env = "FAL_BASE_URL", default_value = "https://queue.fal.run")]
    pub fal_base_url: String,
    /// Pause between FAL status polls, milliseconds.
    #[arg(long, env = "FAL_POLL_MS", default_value_t = 1000)]
    pub fal_poll_ms: u64,
    /// Pause between progress steps of the local provider, milliseconds.
    #[arg(long, env = "LOCAL_PROVIDER_STEP_MS", default_value_t = 250)]
    pub local_step_ms: u64,
    /// Chat provider: `local` (offline), `openai` (OpenAI-compatible), or `auto` (`openai` when
    /// `OPENROUTER_API_KEY` is set).
    #[arg(long, env = "CHAT_PROVIDER", default_value = "auto")]
    pub chat_provider: String,
    /// Key of the OpenAI-compatible chat endpoint.
    #[arg(long, env = "OPENROUTER_API_KEY", hide_env_values = true)]
    pub chat_key: Option<SecretString>,
    /// Base URL of the OpenAI-compatible chat endpoint.
    #[arg(
        long,
        env = "CHAT_BASE_URL",
        default_value = "https://openrouter.ai/api/v1"
    )]
    pub chat_base_url: String,
    /// Chat models offered (comma separated), the first one the default.
    #[arg(long, env = "CHAT_MODELS", default_value = "openai/gpt-4o-mini")]
    pub chat_models: String,
    /// Secret of the payment provider's webhook (Stripe's `whsec_…`); unset = webhooks refused.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<SecretString>,
    /// S3-compatible endpoint for media (e.g. `https://s3.eu-west-1.amazonaws.com`); unset = the
    /// local directory `<DATA_DIR>/media`.
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bucket (path-style addressing).
    #[arg(long, env = "S3_BUCKET", default_value = "velro-media")]
    pub s3_bucket: String,
    /// Signing region.
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Access key id.
    #[arg(long, env = "S3_ACCESS_KEY_ID", default_value = "")]
    pub s3_access_key: String,
    /// Secret access key.
    #[arg(long, env = "S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<SecretString>,
    /// Largest upload, bytes (50 MiB).
    #[arg(long, env = "MAX_FILE_SIZE", default_value_t = 50 * 1024 * 1024)]
    pub max_file_bytes: u64,
    /// Largest JSON body, bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seed a small demo world on start and print how to sign in.
    #[arg(long)]
    pub demo: bool,
    /// `json` or `text` logs; the level is `RUST_LOG`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl ApiConfig {
    /// Defaults, as if started with no flags and no environment (for tests).
    pub fn defaults() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pdp_url: None,
            pdp_api_key: None,
            pdp_timeout_ms: 1000,
            policies: PathBuf::from("./policies"),
            database_url: None,
            redis_url: None,
            data_dir: PathBuf::from("./data"),
            jwt_secret: None,
            public_url: None,
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 30 * 24 * 3600,
            invitation_ttl_seconds: 7 * 24 * 3600,
            signup_credits: 1000,
            rate_user: 100,
            rate_ip: 500,
            rate_generations: 10,
            generation_provider: "auto".into(),
            fal_key: None,
            fal_base_url: "https://queue.fal.run".into(),
            fal_poll_ms: 1000,
            local_step_ms: 250,
            chat_provider: "auto".into(),
            chat_key: None,
            chat_base_url: "https://openrouter.ai/api/v1".into(),
            chat_models: "openai/gpt-4o-mini".into(),
            stripe_webhook_secret: None,
            s3_endpoint: None,
            s3_bucket: "velro-media".into(),
            s3_region: "us-east-1".into(),
            s3_access_key: String::new(),
            s3_secret_key: None,
            max_file_bytes: 50 * 1024 * 1024,
            max_body_bytes: 1024 * 1024,
            demo: false,
            log_format: "text".into(),
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => secrecy::ExposeSecret::expose_secret(url).to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("velro.db").display()),
        }
    }

    /// Check what can be checked before binding.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.pdp_url.is_some() || self.policies.is_dir(),
            "policies folder {} not found (set PDP_POLICIES, or PDP_URL for a remote PDP)",
            self.policies.display()
        );
        anyhow::ensure!(
            self.access_ttl_seconds >= 60 && self.access_ttl_seconds <= 24 * 3600,
            "ACCESS_TOKEN_TTL_SECONDS must be 60 to 86400"
        );
        anyhow::ensure!(
            self.refresh_ttl_seconds > self.access_ttl_seconds,
            "REFRESH_TOKEN_TTL_SECONDS must exceed the access-token lifetime"
        );
        anyhow::ensure!(self.signup_credits >= 0, "SIGNUP_CREDITS must be >= 0");
        anyhow::ensure!(
            matches!(self.generation_provider.as_str(), "auto" | "local" | "fal"),
            "GENERATION_PROVIDER must be auto, local or fal"
        );
        anyhow::ensure!(
            self.generation_provider != "fal" || self.fal_key.is_some(),
            "GENERATION_PROVIDER=fal needs FAL_KEY"
        );
        anyhow::ensure!(
            matches!(self.chat_provider.as_str(), "auto" | "local" | "openai"),
            "CHAT_PROVIDER must be auto, local or openai"
        );
        anyhow::ensure!(
            self.chat_provider != "openai" || self.chat_key.is_some(),
            "CHAT_PROVIDER=openai needs OPENROUTER_API_KEY"
        );
        anyhow::ensure!(
            self.fal_base_url.starts_with("https://") || self.fal_base_url.starts_with("http://"),
            "FAL_BASE_URL must be an http(s) URL"
        );
        anyhow::ensure!(
            self.rate_user > 0 && self.rate_ip > 0 && self.rate_generations > 0,
            "rate limits must be positive"
        );
        anyhow::ensure!(
            self.s3_endpoint.is_none()
                || !self.s3_access_key.is_empty() && self.s3_secret_key.is_some(),
            "S3_ENDPOINT needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"
        );
        anyhow::ensure!(
            (1024..=10 * 1024 * 1024 * 1024).contains(&self.max_file_bytes),
            "MAX_FILE_SIZE must be 1 KiB to 10 GiB"
        );
        anyhow::ensure!(
            (1024..=64 * 1024 * 1024).contains(&self.max_body_bytes),
            "MAX_BODY_BYTES must be 1 KiB to 64 MiB"
        );
        anyhow::ensure!(
            self.pdp_timeout_ms > 0 && self.pdp_timeout_ms <= 30_000,
            "PDP_TIMEOUT_MS must be 1 to 30000"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_mode() {
        let config = ApiConfig::defaults();
        assert!(config.pdp_url.is_none());
        assert_eq!(config.database_url(), "sqlite://./data/velro.db");
        assert_eq!(config.addr.port(), 8080);
        let parsed = ApiConfig::try_parse_from(["velro-api"]).unwrap();
        assert_eq!(parsed.addr, config.addr);
        assert_eq!(parsed.rate_user, 100);
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let config = ApiConfig {
            jwt_secret: Some(SecretString::from("s".repeat(64))),
            ..ApiConfig::defaults()
        };
        assert!(!format!("{config:?}").contains(&"s".repeat(64)));
    }
}
