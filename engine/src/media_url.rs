//! Signed media URLs (DESIGN §6.3): Ed25519 (ring) over a canonical string of method, path, expiry,
//! subject, disposition and key id, with a key ring that rotates without breaking URLs already
//! handed out, and the public keys as a JWKS so any edge can verify without a secret.
//!
//! URL: `{public_base}/media/{key}?exp=…&sub=…&disp=…&kid=…&sig=…` (`exp` in Unix seconds).
//! This module does not decide who may get a URL; the engine checks `generation:view_media` or
//! `generation:download` before minting.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::error::{Error, Result};

/// Longest storage key accepted in a URL.
const MAX_KEY_LEN: usize = 512;
/// Longest subject accepted.
const MAX_SUBJECT_LEN: usize = 128;

/// How the media is to be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Shown in the page (`generation:view_media`).
    Inline,
    /// Downloaded as a file (`generation:download`).
    Attachment,
}

impl Disposition {
    /// `inline` or `attachment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inline => "inline",
            Self::Attachment => "attachment",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "inline" => Some(Self::Inline),
            "attachment" => Some(Self::Attachment),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_ms: i64,
    /// After this time the key no longer verifies.
    #[serde(default)]
    retire_at_ms: Option<i64>,
    /// PKCS#8 document, base64.
    pkcs8: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredRing {
    keys: Vec<StoredKey>,
}

struct LiveKey {
    stored: StoredKey,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKey")
            .field("kid", &self.stored.kid)
            .finish_non_exhaustive()
    }
}

/// The signing keys: the newest live one signs, every live one verifies.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<LiveKey>,
}

impl KeyRing {
    /// A ring with one fresh key.
    pub fn generate(now_ms: i64) -> Result<Self> {
        let mut ring = Self { keys: Vec::new() };
        ring.add_key(now_ms)?;
        Ok(ring)
    }

    fn add_key(&mut self, now_ms: i64) -> Result<String> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Keys("cannot generate a key".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| Error::Keys("generated key does not load".into()))?;
        let kid = format!(
            "k{}",
            &hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                pair.public_key().as_ref()
            ))[..12]
        );
        self.keys.push(LiveKey {
            stored: StoredKey {
                kid: kid.clone(),
                created_ms: now_ms,
                retire_at_ms: None,
                pkcs8: STANDARD.encode(pkcs8.as_ref()),
            },
            pair,
        });
        Ok(kid)
    }

    /// Add a new signing key; the previous keys keep verifying until `grace` from now (set it to
    /// the longest URL lifetime so no URL already handed out breaks). Returns the new key id.
    pub fn rotate(&mut self, now_ms: i64, grace: Duration) -> Result<String> {
        let retire = now_ms + i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 2);
        for key in &mut self.keys {
            let at = key.stored.retire_at_ms.map_or(retire, |t| t.min(retire));
            key.stored.retire_at_ms = Some(at);
        }
        self.add_key(now_ms)
    }

    /// Drop keys retired before `now_ms`.
    pub fn prune(&mut self, now_ms: i64) {
        self.keys
            .retain(|k| k.stored.retire_at_ms.is_none_or(|t| t > now_ms));
    }

    /// Read a ring file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let stored: StoredRing = serde_json::from_str(&text)
            .map_err(|e| Error::Keys(format!("{} is not a key ring: {e}", path.display())))?;
        let mut keys = Vec::with_capacity(stored.keys.len());
        for key in stored.keys {
            let der = STANDARD
                .decode(&key.pkcs8)
                .map_err(|_| Error::Keys(format!("key `{}` is not base64", key.kid)))?;
            let pair = Ed25519KeyPair::from_pkcs8(&der)
                .map_err(|_| Error::Keys(format!("key `{}` is not an Ed25519 key", key.kid)))?;
            keys.push(LiveKey { stored: key, pair });
        }
        if keys.is_empty() {
            return Err(Error::Keys(format!("{} holds no key", path.display())));
        }
        Ok(Self { keys })
    }

    /// Write the ring to `path`, readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let stored = StoredRing {
            keys: self.keys.iter().map(|k| k.stored.clone()).collect(),
        };
        let text = serde_json::to_string_pretty(&stored)
            .map_err(|e| Error::Keys(format!("cannot encode keys: {e}")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let tmp = path.with_extension("tmp");
        write_private(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Load the ring at `path`, or create one there if the file does not exist.
    pub fn load_or_generate(path: &Path, now_ms: i64) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        let ring = Self::generate(now_ms)?;
        ring.save(path)?;
        tracing::info!(path = %path.display(), "generated a media URL signing key");
        Ok(ring)
    }

    fn live(&self, now_ms: i64) -> impl Iterator<Item = &LiveKey> {
        self.keys
            .iter()
            .filter(move |k| k.stored.retire_at_ms.is_none_or(|t| t > now_ms))
    }

    fn current(&self, now_ms: i64) -> Option<&LiveKey> {
        self.live(now_ms).max_by_key(|k| k.stored.created_ms)
    }

    /// Key ids, with creation and retirement times.
    pub fn describe(&self) -> Vec<(String, i64, Option<i64>)> {
        self.keys
            .iter()
            .map(|k| {
                (
                    k.stored.kid.clone(),
                    k.stored.created_ms,
                    k.stored.retire_at_ms,
                )
            })
            .collect()
    }

    /// The live public keys as a JWKS document (`OKP` / `Ed25519`).
    pub fn jwks(&self, now_ms: i64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .live(now_ms)
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "kid": k.stored.kid,
                    "x": URL_SAFE_NO_PAD.encode(k.pair.public_key().as_ref()),
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Signer settings.
#[derive(Debug, Clone)]
pub struct MediaUrlConfig {
    /// Base of minted URLs, e.g. `http://127.0.0.1:8080`.
    pub public_base: String,
    /// Lifetime when the caller names none.
    pub default_ttl: Duration,
    /// Longest lifetime a URL may have.
    pub max_ttl: Duration,
}

impl Default for MediaUrlConfig {
    fn default() -> Self {
        Self {
            public_base: "http://127.0.0.1:8080".into(),
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A minted URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedUrl {
    /// The full URL.
    pub url: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Key id that signed it.
    pub kid: String,
}

/// What a verified URL grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedUrl {
    /// Storage key of the media.
    pub key: String,
    /// The principal it was minted for.
    pub subject: String,
    /// How to serve it.
    pub disposition: Disposition,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// Mints and verifies media URLs with a swappable key ring.
#[derive(Debug, Clone)]
pub struct MediaUrlSigner {
    ring: Arc<ArcSwap<KeyRing>>,
    config: MediaUrlConfig,
    clock: SharedClock,
}

/// Whether `key` is a storage key the signer accepts: relative, no `..`, plain characters.
pub fn valid_storage_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
}

fn valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_LEN
        && subject
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn canonical(key: &str, exp: i64, subject: &str, disposition: Disposition, kid: &str) -> String {
    format!(
        "GET\n/media/{key}\n{exp}\n{subject}\n{}\n{kid}",
        disposition.as_str()
    )
}

impl MediaUrlSigner {
    /// A signer using `ring`.
    pub fn new(ring: KeyRing, config: MediaUrlConfig, clock: SharedClock) -> Self {
        Self {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
            config,
            clock,
        }
    }

    /// Replace the key ring (after `keys rotate` wrote a new one).
    pub fn replace_ring(&self, ring: KeyRing) {
        self.ring.store(Arc::new(ring));
    }

    /// The JWKS of the live keys.
    pub fn jwks(&self) -> serde_json::Value {
        self.ring.load().jwks(self.clock.now_ms())
    }

    /// The configured lifetime bounds.
    pub fn config(&self) -> &MediaUrlConfig {
        &self.config
    }

    /// Sign a URL for storage key `key`, for `subject`, valid `ttl` (default if `None`).
    pub fn mint(
        &self,
        key: &str,
        subject: &str,
        disposition: Disposition,
        ttl: Option<Duration>,
    ) -> Result<SignedUrl> {
        if !valid_storage_key(key) {
            return Err(Error::InvalidRequest("invalid storage key".into()));
        }
        if !valid_subject(subject) {
            return Err(Error::InvalidRequest("invalid URL subject".into()));
        }
        let ttl = ttl.unwrap_or(self.config.default_ttl);
        if ttl.is_zero() || ttl > self.config.max_ttl {
            return Err(Error::InvalidRequest(format!(
                "URL lifetime must be between 1 s and {} s",
                self.config.max_ttl.as_secs()
            )));
        }
        let now_ms = self.clock.now_ms();
        let ring = self.ring.load();
        let signer = ring
            .current(now_ms)
            .ok_or_else(|| Error::Keys("no live signing key".into()))?;
        let exp = now_ms / 1000 + i64::try_from(ttl.as_secs()).unwrap_or(0);
        let kid = &signer.stored.kid;
        let signature = signer
            .pair
            .sign(canonical(key, exp, subject, disposition, kid).as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(signature.as_ref());
        Ok(SignedUrl {
            url: format!(
                "{}/media/{key}?exp={exp}&sub={subject}&disp={}&kid={kid}&sig={sig}",
                self.config.public_base.trim_end_matches('/'),
                disposition.as_str()
            ),
            expires_at: exp,
            kid: kid.clone(),
        })
    }

    /// Verify a request for `path` (`/media/<key>`) with query string `query`. Every part must be
    /// present exactly once and nothing else; the signature, expiry and key must check out.
    pub fn verify(&self, path: &str, query: &str) -> Result<VerifiedUrl> {
        let malformed = || Error::MediaUrl("malformed URL");
        let key = path.strip_prefix("/media/").ok_or_else(malformed)?;
        if !valid_storage_key(key) {
            return Err(malformed());
        }
        let (mut exp, mut sub, mut disp, mut kid, mut sig) = (None, None, None, None, None);
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').ok_or_else(malformed)?;
            let slot = match name {
                "exp" => &mut exp,
                "sub" => &mut sub,
                "disp" => &mut disp,
                "kid" => &mut kid,
                "sig" => &mut sig,
                _ => return Err(malformed()),
            };
            if slot.replace(value).is_some() {
                return Err(malformed());
            }
        }
        let (Some(exp), Some(sub), Some(disp), Some(kid), Some(sig)) = (exp, sub, disp, kid, sig)
        else {
            return Err(malformed());
        };
        if exp.is_empty() || exp.len() > 12 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let exp: i64 = exp.parse().map_err(|_| malformed())?;
        let disposition = Disposition::parse(disp).ok_or_else(malformed)?;
        if !valid_subject(sub) {
            return Err(malformed());
        }
        let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|_| malformed())?;

        let now_ms = self.clock.now_ms();
        let now = now_ms / 1000;
        if exp <= now {
            return Err(Error::MediaUrl("expired"));
        }
        let max = i64::try_from(self.config.max_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        if exp - now > max {
            return Err(Error::MediaUrl("expiry beyond the longest lifetime"));
        }
        let ring = self.ring.load();
        let key_pair = ring
            .live(now_ms)
            .find(|k| k.stored.kid == kid)
            .ok_or(Error::MediaUrl("unknown or retired key"))?;
        let public = UnparsedPublicKey::new(&ED25519, key_pair.pair.public_key().as_ref());
        public
            .verify(
                canonical(key, exp, sub, disposition, kid).as_bytes(),
                &signature,
            )
            .map_err(|_| Error::MediaUrl("bad signature"))?;
        Ok(VerifiedUrl {
            key: key.to_owned(),
            subject: sub.to_owned(),
            disposition,
            expires_at: exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const NOW: i64 = 1_800_000_000_000;

    fn signer() -> (MediaUrlSigner, ManualClock) {
        let clock = ManualClock::new(NOW);
        let signer = MediaUrlSigner::new(
            KeyRing::generate(NOW).unwrap(),
            MediaUrlConfig::default(),
            Arc::new(clock.clone()),
        );
        (signer, clock)
    }

    fn split(url: &str) -> (String, String) {
        let rest = url.strip_prefix("http://127.0.0.1:8080").unwrap();
        let (path, query) = rest.split_once('?').unwrap();
        (path.to_owned(), query.to_owned())
    }

    #[test]
    fn a_minted_url_verifies() {
        let (signer, _) = signer();
        let url = signer
            .mint("gen/abc/0.png", "user-1", Disposition::Inline, None)
            .unwrap();
        let (path, query) = split(&url.url);
        let verified = signer.verify(&path, &query).unwrap();
        assert_eq!(verified.key, "gen/abc/0.png");
        assert_eq!(verified.subject, "user-1");
        assert_eq!(verified.disposition, Disposition::Inline);
        assert_eq!(verified.expires_at, NOW / 1000 + 900);
    }

    #[test]
    fn tampering_with_any_byte_is_rejected() {
        let (signer, _) = signer();
        let url = signer
            .mint("gen/abc/0.png", "user-1", Disposition::Inline, None)
            .unwrap();
        let (path, query) = split(&url.url);
        let full = format!("{path}?{query}");
        for i in 0..full.len() {
            let mut bytes = full.clone().into_bytes();
            bytes[i] = match bytes[i] {
                b'a' => b'b',
                b'0' => b'1',
                b'?' | b'&' | b'=' | b'/' => continue,
                _ => b'a',
            };
            let tampered = String::from_utf8(bytes).unwrap();
            let Some((p, q)) = tampered.split_once('?') else {
                continue;
            };
            assert!(signer.verify(p, q).is_err(), "byte {i}: {tampered}");
        }
    }

    #[test]
    fn expired_and_overlong_urls_are_rejected() {
        let (signer, clock) = signer();
        let url = signer
            .mint(
                "k.png",
                "u",
                Disposition::Attachment,
                Some(Duration::from_secs(60)),
            )
            .unwrap();
        let (path, query) = split(&url.url);
        clock.advance(59_000);
        assert!(signer.verify(&path, &query).is_ok());
        clock.advance(1_000);
        assert!(matches!(
            signer.verify(&path, &query),
            Err(Error::MediaUrl("expired"))
        ));
        assert!(
            signer
                .mint(
                    "k.png",
                    "u",
                    Disposition::Inline,
                    Some(Duration::from_secs(86_401))
                )
                .is_err()
        );
        assert!(
            signer
                .mint("../etc/passwd", "u", Disposition::Inline, None)
                .is_err()
        );
        assert!(
            signer
                .mint("a/../b", "u", Disposition::Inline, None)
                .is_err()
        );
    }

    #[test]
    fn rotation_keeps_old_urls_valid_until_the_old_key_retires() {
        let (signer, clock) = signer();
        let old = signer
            .mint(
                "k.png",
                "u",
                Disposition::Inline,
                Some(Duration::from_secs(3600)),
            )
            .unwrap();
        let mut ring = KeyRing {
            keys: signer
                .ring
                .load()
                .keys
                .iter()
                .map(|k| LiveKey {
                    stored: k.stored.clone(),
                    pair: Ed25519KeyPair::from_pkcs8(&STANDARD.decode(&k.stored.pkcs8).unwrap())
                        .unwrap(),
                })
                .collect(),
        };
        let new_kid = ring.rotate(NOW, Duration::from_secs(7200)).unwrap();
        signer.replace_ring(ring);
        let new = signer
            .mint("k.png", "u", Disposition::Inline, None)
            .unwrap();
        assert_eq!(new.kid, new_kid);
        assert_ne!(old.kid, new_kid);
        let (path, query) = split(&old.url);
        assert!(signer.verify(&path, &query).is_ok());
        assert_eq!(signer.jwks()["keys"].as_array().unwrap().len(), 2);
        // Past the grace period the old key is retired.
        clock.advance(7_200_000);
        assert_eq!(signer.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn rings_round_trip_through_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/media.json");
        let ring = KeyRing::load_or_generate(&path, NOW).unwrap();
        let again = KeyRing::load_or_generate(&path, NOW).unwrap();
        assert_eq!(ring.describe(), again.describe());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let jwk = &ring.jwks(NOW)["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
}
