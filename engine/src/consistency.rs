//! Consistency tokens and modes (DESIGN §6.2).
//!
//! A token is opaque to callers: `base64url("v1.<store>.<policy version or ->.<data revision>")`.
//! It says "the answer reflects at least this data revision under this policy version". Policy
//! versions are content hashes and carry no order, so a token's policy version is informative; the
//! data revision is what `at_least_as_fresh` enforces.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

/// Longest accepted token text.
const MAX_TOKEN_LEN: usize = 256;

/// How fresh an answer must be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Caches may answer (bounded by the change-feed interval).
    #[default]
    MinimizeLatency,
    /// The answer must reflect at least the token's data revision (read-your-writes).
    AtLeastAsFresh(ConsistencyToken),
    /// Bypass every cache.
    FullyConsistent,
}

/// A parsed consistency token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyToken {
    /// The policy store it was issued for.
    pub store: String,
    /// The store's policy version, when known (a write's token does not know it).
    pub policy_version: Option<String>,
    /// The data revision.
    pub revision: i64,
}

impl ConsistencyToken {
    /// A token for `store` at `revision`.
    pub fn new(store: &str, policy_version: Option<&str>, revision: i64) -> Self {
        Self {
            store: store.to_owned(),
            policy_version: policy_version.map(str::to_owned),
            revision,
        }
    }

    /// Parse a token, refusing anything malformed.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |why: &str| Error::InvalidToken(why.to_owned());
        if text.is_empty() || text.len() > MAX_TOKEN_LEN {
            return Err(invalid("wrong length"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| invalid("not base64url"))?;
        let plain = String::from_utf8(bytes).map_err(|_| invalid("not text"))?;
        let mut parts = plain.split('.');
        let (Some("v1"), Some(store), Some(version), Some(revision), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid("unknown format"));
        };
        if store.is_empty()
            || !store
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid("bad store name"));
        }
        let policy_version = match version {
            "-" => None,
            v if v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()) => Some(v.to_owned()),
            _ => return Err(invalid("bad policy version")),
        };
        let revision: i64 = revision.parse().map_err(|_| invalid("bad revision"))?;
        if revision < 0 {
            return Err(invalid("bad revision"));
        }
        Ok(Self {
            store: store.to_owned(),
            policy_version,
            revision,
        })
    }

    /// The token's text form.
    pub fn encode(&self) -> String {
        let plain = format!(
            "v1.{}.{}.{}",
            self.store,
            self.policy_version.as_deref().unwrap_or("-"),
            self.revision
        );
        URL_SAFE_NO_PAD.encode(plain)
    }
}

/// Tokens serialize as their opaque text.
impl serde::Serialize for ConsistencyToken {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = ConsistencyToken::new("velro", Some(&"a".repeat(32)), 42);
        assert_eq!(ConsistencyToken::parse(&token.encode()).unwrap(), token);
        let write = ConsistencyToken::new("velro", None, 7);
        assert_eq!(ConsistencyToken::parse(&write.encode()).unwrap(), write);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let b = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "!!!".into(),
            "x".repeat(300),
            b("v2.velro.-.1"),
            b("v1.velro.-.-1"),
            b("v1.velro.-.1.extra"),
            b("v1.ve lro.-.1"),
            b("v1.velro.zz.1"),
            b("v1.velro.-.abc"),
            b("v1..-.1"),
        ] {
            assert!(ConsistencyToken::parse(&bad).is_err(), "{bad}");
        }
    }
}
