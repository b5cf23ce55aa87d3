//! Caller authentication (`authorization: Bearer <key>`) and per-caller concurrency limits,
//! shared by the gRPC and HTTP servers. Keys are kept only as SHA-256 digests and compared in
//! constant time. With no key configured (allowed on loopback only) every caller is `local`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ring::digest;
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PdpConfig;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// A stable, non-secret name: `key:<first 8 hex of the key's digest>`, `admin`, or `local`.
    pub id: String,
    /// Holds the admin key (or keys are not configured at all).
    pub admin: bool,
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No or malformed credentials.
    Missing,
    /// Credentials not accepted for this call.
    Denied,
}

type KeyDigest = [u8; 32];

fn digest_of(key: &str) -> KeyDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, key.as_bytes()).as_ref());
    out
}

fn same(a: &KeyDigest, b: &KeyDigest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured keys.
#[derive(Debug, Clone)]
pub struct Keys {
    api: Vec<KeyDigest>,
    admin: Option<KeyDigest>,
}

impl Keys {
    /// From the configuration.
    pub fn from_config(config: &PdpConfig) -> Self {
        Self {
            api: config.api_key_list().iter().map(|k| digest_of(k)).collect(),
            admin: config
                .admin_key
                .as_ref()
                .map(|k| digest_of(k.expose_secret())),
        }
    }

    fn open(&self) -> bool {
        self.api.is_empty() && self.admin.is_none()
    }

    /// Authenticate an `authorization` header value. `admin` calls need the admin key; other
    /// calls take an API key or the admin key.
    pub fn authenticate(&self, header: Option<&str>, admin: bool) -> Result<Caller, AuthError> {
        if self.open() {
            return Ok(Caller {
                id: "local".into(),
                admin: true,
            });
        }
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let presented = digest_of(token);
        if self.admin.as_ref().is_some_and(|a| same(a, &presented)) {
            return Ok(Caller {
                id: "admin".into(),
                admin: true,
            });
        }
        // Compare against every key, so timing does not tell which one matched.
        let matched = self
            .api
            .iter()
            .fold(false, |found, k| same(k, &presented) | found);
        if !matched {
            return Err(AuthError::Denied);
        }
        if admin {
            return Err(AuthError::Denied);
        }
        Ok(Caller {
            id: format!("key:{}", &hex::encode(presented)[..8]),
            admin: false,
        })
    }
}

/// Per-caller concurrency: at most `max` calls of one caller in flight; more are refused at once.
#[derive(Debug, Clone)]
pub struct Limits {
    max: usize,
    callers: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Limits {
    /// `max` concurrent calls per caller.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            callers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A permit for one call of `caller`, or `None` when it has `max` in flight.
    pub fn acquire(&self, caller: &Caller) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut callers = self
                .callers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                callers
                    .entry(caller.id.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.max))),
            )
        };
        semaphore.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keys() -> Keys {
        Keys::from_config(&PdpConfig {
            api_keys: Some(SecretString::from(
                "caller-one-0123456789,caller-two-0123456789",
            )),
            admin_key: Some(SecretString::from("admin-key-0123456789")),
            ..PdpConfig::default()
        })
    }

    #[test]
    fn api_keys_call_and_only_the_admin_key_administers() {
        let keys = keys();
        let one = keys
            .authenticate(Some("Bearer caller-one-0123456789"), false)
            .unwrap();
        let two = keys
            .authenticate(Some("Bearer caller-two-0123456789"), false)
            .unwrap();
        assert_ne!(one.id, two.id);
        assert!(!one.id.contains("caller"), "ids do not reveal keys");
        assert_eq!(
            keys.authenticate(Some("Bearer caller-one-0123456789"), true),
            Err(AuthError::Denied)
        );
        assert!(
            keys.authenticate(Some("Bearer admin-key-0123456789"), true)
                .unwrap()
                .admin
        );
        assert!(
            keys.authenticate(Some("Bearer admin-key-0123456789"), false)
                .is_ok()
        );
        assert_eq!(keys.authenticate(None, false), Err(AuthError::Missing));
        assert_eq!(
            keys.authenticate(Some("Basic abc"), false),
            Err(AuthError::Missing)
        );
        assert_eq!(
            keys.authenticate(Some("Bearer wrong"), false),
            Err(AuthError::Denied)
        );
    }

    #[test]
    fn without_keys_every_local_caller_is_accepted() {
        let keys = Keys::from_config(&PdpConfig::default());
        assert!(keys.authenticate(None, true).unwrap().admin);
    }

    #[test]
    fn concurrency_is_limited_per_caller() {
        let limits = Limits::new(2);
        let a = Caller {
            id: "a".into(),
            admin: false,
        };
        let b = Caller {
            id: "b".into(),
            admin: false,
        };
        let p1 = limits.acquire(&a).unwrap();
        let _p2 = limits.acquire(&a).unwrap();
        assert!(limits.acquire(&a).is_none());
        assert!(limits.acquire(&b).is_some());
        drop(p1);
        assert!(limits.acquire(&a).is_some());
    }
}
