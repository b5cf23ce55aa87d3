//! The PDP's typed configuration: defaults, then an optional TOML file (`--config` or
//! `PDP_CONFIG`), then environment variables, then command-line flags. Validated before anything
//! binds. Every variable is listed in `.env.example`. Secrets are `SecretString` and never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use velro_engine::EngineConfig;
use velro_engine::changes::ChangeFeedConfig;
use velro_engine::db::DbConfig;
use velro_engine::media_url::MediaUrlConfig;
use velro_engine::violations::ViolationConfig;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (default; for log shippers).
    Json,
    /// Human-readable lines.
    Text,
}

/// Configuration of `velro-pdp serve` (and of the CLI commands that open the engine).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdpConfig {
    /// gRPC listen address (`PDP_GRPC_ADDR`); port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (`PDP_HTTP_ADDR`); port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// Folder of policy stores (`PDP_POLICIES`).
    pub policies: PathBuf,
    /// `sqlite://…` or `postgres://…` (`DATABASE_URL`).
    #[serde(skip_serializing, default = "default_database_url")]
    pub database_url: SecretString,
    /// Redis for the shared cache and violation windows (`REDIS_URL`); unset = L1 only.
    #[serde(skip_serializing, default)]
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key (`PDP_REDIS_PREFIX`).
    pub redis_prefix: String,
    /// Audit sink: `file:<dir>`, `stdout` or `postgres` (`PDP_AUDIT`).
    pub audit: String,
    /// This instance's audit chain name (`PDP_AUDIT_INSTANCE`).
    pub audit_instance: String,
    /// Data folder for defaults (`DATA_DIR`).
    pub data_dir: PathBuf,
    /// Media URL signing key ring (`PDP_KEYS_FILE`); `<data_dir>/keys/media-signing.json` when unset.
    pub keys_file: Option<PathBuf>,
    /// Caller API keys, comma separated (`PDP_API_KEY`).
    #[serde(skip_serializing, default)]
    pub api_keys: Option<SecretString>,
    /// Admin key for `PolicyAdmin` and `/v1/stores` (`PDP_ADMIN_KEY`).
    #[serde(skip_serializing, default)]
    pub admin_key: Option<SecretString>,
    /// Break-glass policies may apply (`EMERGENCY_AUTH_MODE`).
    pub emergency_mode: bool,
    /// Offences per second that make a violation (`SECURITY_VIOLATION_THRESHOLD`).
    pub violation_threshold: u32,
    /// Lockout after a violation, seconds; 0 disables (`SECURITY_LOCKOUT_SECONDS`).
    pub lockout_seconds: u64,
    /// Base of minted media URLs: the app API's public address (`PDP_MEDIA_BASE_URL`).
    pub media_base_url: String,
    /// Default media URL lifetime, seconds (`PDP_MEDIA_TTL_SECONDS`).
    pub media_ttl_seconds: u64,
    /// Change-log poll interval, milliseconds (`PDP_TAIL_INTERVAL_MS`).
    pub tail_interval_ms: u64,
    /// Staleness beyond which caches are bypassed, milliseconds (`PDP_MAX_STALENESS_MS`).
    pub max_staleness_ms: u64,
    /// TLS certificate chain, PEM (`PDP_TLS_CERT`); TLS is on when set with the key.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (`PDP_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
    /// CA of client certificates, PEM (`PDP_TLS_CLIENT_CA`); set it to require mTLS.
    pub tls_client_ca: Option<PathBuf>,
    /// Largest request accepted, bytes (`PDP_MAX_REQUEST_BYTES`).
    pub max_request_bytes: usize,
    /// Most concurrent calls one caller may have in flight (`PDP_MAX_CONCURRENCY_PER_CALLER`).
    pub max_concurrency_per_caller: usize,
    /// `json` or `text` (`PDP_LOG_FORMAT`); the level is `RUST_LOG`.
    pub log_format: LogFormat,
}

fn default_database_url() -> SecretString {
    SecretString::from("sqlite://./data/velro.db")
}

impl Default for PdpConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9091)),
            policies: PathBuf::from("./policies"),
            database_url: default_database_url(),
            redis_url: None,
            redis_prefix: "velro:".into(),
            audit: "file:./data/audit".into(),
            audit_instance: "pdp".into(),
            data_dir: PathBuf::from("./data"),
            keys_file: None,
            api_keys: None,
            admin_key: None,
            emergency_mode: false,
            violation_threshold: 5,
            lockout_seconds: 0,
            media_base_url: "http://127.0.0.1:8080".into(),
            media_ttl_seconds: 15 * 60,
            tail_interval_ms: 100,
            max_staleness_ms: 5_000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_request_bytes: 4 * 1024 * 1024,
            max_concurrency_per_caller: 256,
            log_format: LogFormat::Json,
        }
    }
}

/// Environment variables and the fields they set.
const ENV: &[(&str, &str)] = &[
    ("PDP_GRPC_ADDR", "grpc_addr"),
    ("PDP_HTTP_ADDR", "http_addr"),
    ("PDP_POLICIES", "policies"),
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("PDP_REDIS_PREFIX", "redis_prefix"),
    ("PDP_AUDIT", "audit"),
    ("PDP_AUDIT_INSTANCE", "audit_instance"),
    ("DATA_DIR", "data_dir"),
    ("PDP_KEYS_FILE", "keys_file"),
    ("PDP_API_KEY", "api_keys"),
    ("PDP_ADMIN_KEY", "admin_key"),
    ("EMERGENCY_AUTH_MODE", "emergency_mode"),
    ("SECURITY_VIOLATION_THRESHOLD", "violation_threshold"),
    ("SECURITY_LOCKOUT_SECONDS", "lockout_seconds"),
    ("PDP_MEDIA_BASE_URL", "media_base_url"),
    ("PDP_MEDIA_TTL_SECONDS", "media_ttl_seconds"),
    ("PDP_TAIL_INTERVAL_MS", "tail_interval_ms"),
    ("PDP_MAX_STALENESS_MS", "max_staleness_ms"),
    ("PDP_TLS_CERT", "tls_cert"),
    ("PDP_TLS_KEY", "tls_key"),
    ("PDP_TLS_CLIENT_CA", "tls_client_ca"),
    ("PDP_MAX_REQUEST_BYTES", "max_request_bytes"),
    (
        "PDP_MAX_CONCURRENCY_PER_CALLER",
        "max_concurrency_per_caller",
    ),
    ("PDP_LOG_FORMAT", "log_format"),
];

/// A configuration problem, said plainly.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl PdpConfig {
    /// Defaults → `file` (if given, or `PDP_CONFIG`) → environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("PDP_CONFIG").map(PathBuf::from));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::raw().filter_map(|key| {
            ENV.iter()
                .find(|(var, _)| key.as_str() == *var)
                .map(|(_, field)| (*field).into())
        }));
        figment.extract().map_err(|e| ConfigError(e.to_string()))
    }

    /// Check everything that can be checked before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let loopback = self.grpc_addr.ip().is_loopback() && self.http_addr.ip().is_loopback();
        if !loopback && (self.api_key_list().is_empty() || self.admin_key.is_none()) {
            return Err(ConfigError(
                "listening beyond loopback needs PDP_API_KEY and PDP_ADMIN_KEY".into(),
            ));
        }
        for key in self.api_key_list() {
            if key.len() < 16 {
                return Err(ConfigError(
                    "API keys must be at least 16 characters".into(),
                ));
            }
        }
        if self
            .admin_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 16)
        {
            return Err(ConfigError(
                "the admin key must be at least 16 characters".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "PDP_TLS_CERT and PDP_TLS_KEY go together".into(),
            ));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError(
                "PDP_TLS_CLIENT_CA needs TLS (PDP_TLS_CERT and PDP_TLS_KEY)".into(),
            ));
        }
        if self.max_request_bytes < 1024 || self.max_concurrency_per_caller == 0 {
            return Err(ConfigError(
                "request size must be at least 1 KiB and concurrency at least 1".into(),
            ));
        }
        if self.media_ttl_seconds == 0 || self.media_ttl_seconds > 24 * 3600 {
            return Err(ConfigError(
                "PDP_MEDIA_TTL_SECONDS must be 1 to 86400".into(),
            ));
        }
        if self.tail_interval_ms == 0 || self.max_staleness_ms < self.tail_interval_ms {
            return Err(ConfigError(
                "PDP_MAX_STALENESS_MS must be at least PDP_TAIL_INTERVAL_MS (> 0)".into(),
            ));
        }
        Ok(())
    }

    /// The API keys, split on commas.
    pub fn api_key_list(&self) -> Vec<String> {
        self.api_keys
            .as_ref()
            .map(|k| {
                k.expose_secret()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The key ring file.
    pub fn keys_path(&self) -> PathBuf {
        self.keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("media-signing.json"))
    }

    /// The engine's configuration.
    pub fn engine(&self) -> EngineConfig {
        let mut engine = EngineConfig::embedded(&self.data_dir);
        engine.database = DbConfig::new(self.database_url.expose_secret().to_owned());
        engine.redis_url = self
            .redis_url
            .as_ref()
            .map(|u| u.expose_secret().to_owned());
        engine.redis_prefix = self.redis_prefix.clone();
        engine.audit_sink = self.audit.clone();
        engine.audit_instance = self.audit_instance.clone();
        engine.keys_file = self.keys_path();
        engine.emergency_mode = self.emergency_mode;
        engine.violations = ViolationConfig {
            threshold_per_sec: self.violation_threshold,
            lockout: Duration::from_secs(self.lockout_seconds),
        };
        engine.media = MediaUrlConfig {
            public_base: self.media_base_url.clone(),
            default_ttl: Duration::from_secs(self.media_ttl_seconds),
            ..MediaUrlConfig::default()
        };
        engine.feed = ChangeFeedConfig {
            interval: Duration::from_millis(self.tail_interval_ms),
            max_staleness: Duration::from_millis(self.max_staleness_ms),
            ..ChangeFeedConfig::default()
        };
        engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let config = PdpConfig::default();
        config.validate().unwrap();
        assert!(config.grpc_addr.ip().is_loopback());
        assert_eq!(
            config.keys_path(),
            PathBuf::from("./data/keys/media-signing.json")
        );
    }

    #[test]
    fn public_addresses_need_keys() {
        let mut config = PdpConfig {
            grpc_addr: "0.0.0.0:50051".parse().unwrap(),
            ..PdpConfig::default()
        };
        assert!(config.validate().is_err());
        config.api_keys = Some(SecretString::from(
            "k1-0123456789abcdef, k2-0123456789abcdef",
        ));
        assert!(config.validate().is_err());
        config.admin_key = Some(SecretString::from("admin-0123456789abcdef"));
        config.validate().unwrap();
        assert_eq!(config.api_key_list().len(), 2);
        config.api_keys = Some(SecretString::from("short"));
        assert!(config.validate().is_err());
    }

    #[test]
    fn a_file_and_the_environment_layer_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pdp.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9999\"\nlockout_seconds = 30\n",
        )
        .unwrap();
        let config = PdpConfig::load(Some(&file)).unwrap();
        assert_eq!(config.http_addr.port(), 9999);
        assert_eq!(config.lockout_seconds, 30);
        assert_eq!(config.grpc_addr.port(), 50051);
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        assert!(PdpConfig::load(Some(&file)).is_err());
        assert!(PdpConfig::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let config = PdpConfig {
            admin_key: Some(SecretString::from("admin-0123456789abcdef")),
            ..PdpConfig::default()
        };
        assert!(!format!("{config:?}").contains("admin-0123456789abcdef"));
    }
}
