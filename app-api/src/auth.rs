//! Authentication: argon2id password hashes, HS256 access tokens (algorithm pinned, `aud`, `iss`,
//! `jti`, `exp` required; revoked `jti`s refused), rotating refresh tokens with family revocation
//! on reuse, and login throttling. Authentication says *who*; the PDP says *what they may do*.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::AppState;
use crate::authz::Principal;
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::Class;

/// Audience of access tokens.
pub const AUDIENCE: &str = "velro-api";
/// Issuer of access tokens.
pub const ISSUER: &str = "velro";
/// Shortest accepted signing secret (HS256 wants at least the hash size; we ask for 64 bytes).
pub const MIN_SECRET_BYTES: usize = 64;

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Token id, for revocation.
    pub jti: String,
    /// Audience.
    pub aud: String,
    /// Issuer.
    pub iss: String,
}

/// Signs and verifies access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `n` random bytes from the OS.
pub fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the OS random generator failed"))?;
    Ok(bytes)
}

/// SHA-256 of `text`, hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// Read the signing secret from `path`, or create it (64 random bytes, owner-only) on first start.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.is_file() {
        let text = std::fs::read_to_string(path)?;
        let secret = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| anyhow::anyhow!("{} is not base64url", path.display()))?;
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "{} holds fewer than {MIN_SECRET_BYTES} bytes",
            path.display()
        );
        return Ok(secret);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = random_bytes(MIN_SECRET_BYTES)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    std::io::Write::write_all(&mut file, URL_SAFE_NO_PAD.encode(&secret).as_bytes())?;
    tracing::info!(path = %path.display(), "generated the access-token signing secret");
    Ok(secret)
}

impl TokenKeys {
    /// Keys from a secret of at least 64 bytes.
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "the JWT secret must be at least {MIN_SECRET_BYTES} bytes"
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
        validation.leeway = 5;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            access_ttl,
            refresh_ttl,
        })
    }

    /// A new access token for `user`: (token, claims).
    pub fn issue(&self, user: Uuid) -> ApiResult<(String, Claims)> {
        let now = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp: now + i64::try_from(self.access_ttl.as_secs()).unwrap_or(900),
            jti: Uuid::now_v7().to_string(),
            aud: AUDIENCE.into(),
            iss: ISSUER.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
        Ok((token, claims))
    }

    /// Verify signature (HS256 only), expiry, audience and issuer.
    pub fn verify(&self, token: &str) -> ApiResult<Claims> {
        if token.len() > 4096 {
            return Err(ApiError::Unauthenticated("invalid access token"));
        }
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    Err(ApiError::Unauthenticated("access token expired"))
                }
                _ => Err(ApiError::Unauthenticated("invalid access token")),
            },
        }
    }
}

/// Hash a password with argon2id (a fresh salt each time). CPU-heavy: run it off the runtime.
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = random_bytes(16).map_err(|e| ApiError::Internal(e.to_string()))?;
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("hashing task: {e}")))?
}

/// Check a password against a stored hash (constant time inside argon2).
pub async fn verify_password(password: String, hash: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("verifying task: {e}")))
}

/// A hash to verify against when the account does not exist, so that timing does not reveal
/// which emails are registered.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$wzX8Q9U3yqvcq3sXfK0Sg0JmT4yZbmQnHpyrjmYbN8c";

/// The password policy: 10 to 128 characters, at least one letter and one digit.
pub fn check_password_policy(password: &str) -> ApiResult<()> {
    let length = password.chars().count();
    if !(10..=128).contains(&length) {
        return Err(ApiError::validation(
            "password",
            "password must be 10 to 128 characters",
        ));
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(ApiError::validation(
            "password",
            "password must contain a letter and a digit",
        ));
    }
    Ok(())
}

/// Normalize and check an email address: trimmed, lowercased, one `@`, bounded.
pub fn normalize_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split('@').count() == 2
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.ends_with('.')
        && email
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.+-_".contains(c));
    if !valid {
        return Err(ApiError::validation("email", "not a valid email address"));
    }
    Ok(email)
}

/// A new opaque token (refresh token, invitation) and the SHA-256 hash that is stored instead.
pub fn new_opaque_token() -> ApiResult<(String, String)> {
    let bytes = random_bytes(32).map_err(|e| ApiError::Internal(e.to_string()))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = sha256_hex(&token);
    Ok((token, hash))
}

/// Counts failed logins per account and per IP; too many in the window → 429.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Failures allowed per key in one window.
const LOGIN_FAILURES: u32 = 5;
/// The window.
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

impl LoginThrottle {
    /// Refuse when any of `keys` has too many recent failures.
    pub fn check(&self, keys: &[String]) -> ApiResult<()> {
        let Ok(failures) = self.failures.lock() else {
            return Err(ApiError::Internal("login throttle poisoned".into()));
        };
        for key in keys {
            if let Some((count, since)) = failures.get(key)
                && *count >= LOGIN_FAILURES
                && since.elapsed() < LOGIN_WINDOW
            {
                let retry_after = LOGIN_WINDOW.saturating_sub(since.elapsed()).as_secs();
                return Err(ApiError::RateLimited { retry_after });
            }
        }
        Ok(())
    }

    /// Record a failure against every key.
    pub fn failed(&self, keys: &[String]) {
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() > 100_000 {
                failures.retain(|_, (_, since)| since.elapsed() < LOGIN_WINDOW);
            }
            for key in keys {
                let entry = failures.entry(key.clone()).or_insert((0, Instant::now()));
                if entry.1.elapsed() >= LOGIN_WINDOW {
                    *entry = (0, Instant::now());
                }
                entry.0 += 1;
            }
        }
    }

    /// Forget the account's failures after a successful login.
    pub fn succeeded(&self, account: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(account);
        }
    }
}

/// The caller of a request: a verified user, or anonymous when no token was sent. An invalid,
/// expired or revoked token is a 401, never a silent downgrade to anonymous.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Principal);

/// A caller that must be signed in.
#[derive(Debug, Clone)]
pub struct User {
    /// The user's id.
    pub id: Uuid,
    /// The access token's claims.
    pub claims: Claims,
}

impl User {
    /// As a PDP principal.
    pub fn principal(&self) -> Principal {
        Principal::User(self.id)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> ApiResult<Option<User>> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthenticated(
            "expected `Authorization: Bearer <token>`",
        ))?;
    let claims = state.tokens.verify(token.trim())?;
    let id = crate::extract::parse_id("sub", &claims.sub)
        .map_err(|_| ApiError::Unauthenticated("invalid access token"))?;
    if state.repo.jti_revoked(&claims.jti).await? {
        return Err(ApiError::Unauthenticated("access token revoked"));
    }
    state.limiter.hit(Class::User, &claims.sub).await?;
    Ok(Some(User { id, claims }))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        Ok(Self(match authenticate(parts, state).await? {
            Some(user) => Principal::User(user.id),
            None => Principal::Anonymous,
        }))
    }
}

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        authenticate(parts, state)
            .await?
            .ok_or(ApiError::Unauthenticated("sign in first"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            &[7u8; 64],
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
        .unwrap()
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(
            TokenKeys::new(&[1u8; 32], Duration::from_secs(1), Duration::from_secs(1)).is_err()
        );
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let keys = keys();
        let user = Uuid::now_v7();
        let (token, claims) = keys.issue(user).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, user.to_string());
        assert_eq!(claims.aud, AUDIENCE);

        // Another key.
        let other =
            TokenKeys::new(&[8u8; 64], Duration::from_secs(60), Duration::from_secs(60)).unwrap();
        assert!(other.verify(&token).is_err());

        // alg: none with the same claims.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(keys.verify(&format!("{header}.{body}.")).is_err());

        // Wrong audience, correctly signed.
        let mut wrong = claims.clone();
        wrong.aud = "someone-else".into();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &wrong,
            &EncodingKey::from_secret(&[7u8; 64]).unwrap(),
        )
        .unwrap();
        assert!(keys.verify(&forged).is_err());

        // Expired, correctly signed.
        let mut old = claims;
        old.exp = now_secs() - 3600;
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &old,
            &EncodingKey::from_secret(&[7u8; 64]).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            keys.verify(&expired),
            Err(ApiError::Unauthenticated("access token expired"))
        ));
    }

    #[test]
    fn password_policy_and_emails() {
        assert!(check_password_policy("short1").is_err());
        assert!(check_password_policy("longenoughbutnodigits").is_err());
        assert!(check_password_policy("correct horse 9").is_ok());
        assert_eq!(
            normalize_email(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "no-at",
            "a@b",
            "a@@b.c",
            "<script>@x.io",
            "a@b.c'; DROP TABLE users;--",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse 9".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse 9".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(!verify_password("wrong horse 9".into(), hash).await.unwrap());
        assert!(
            !verify_password("x".into(), DUMMY_HASH.into())
                .await
                .unwrap()
        );
    }

    #[test]
    fn throttling_counts_failures_per_key() {
        let throttle = LoginThrottle::default();
        let keys = vec!["acct:a".to_owned(), "ip:1".to_owned()];
        for _ in 0..LOGIN_FAILURES {
            throttle.check(&keys).unwrap();
            throttle.failed(&keys);
        }
        assert!(matches!(
            throttle.check(&keys),
            Err(ApiError::RateLimited { .. })
        ));
        throttle.succeeded("acct:a");
        assert!(throttle.check(&["acct:a".to_owned()]).is_ok());
        assert!(throttle.check(&["ip:1".to_owned()]).is_err());
    }
}
