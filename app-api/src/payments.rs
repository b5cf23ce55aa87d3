//! Stripe-compatible webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex hmac>[,v1=…]`, where
//! each `v1` is HMAC-SHA256 over `"<t>.<raw body>"` with the endpoint's secret. A signature is
//! accepted when any `v1` matches (constant-time) and `t` is within the tolerance of now, so a
//! captured delivery cannot be replayed later.

use ring::hmac;

/// How far `t` may be from now, seconds.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is missing or malformed.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("signature timestamp outside the tolerance")]
    Stale,
    /// No signature matches.
    #[error("no matching signature")]
    Mismatch,
}

/// Sign `body` at `timestamp` (for tests and for tools that send test events).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut payload = format!("{timestamp}.").into_bytes();
    payload.extend_from_slice(body);
    hex::encode(hmac::sign(&key, &payload).as_ref())
}

/// Verify a `Stripe-Signature` header for `body` at time `now` (Unix seconds).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    if header.len() > 2048 {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => {
                if let Ok(bytes) = hex::decode(sig) {
                    candidates.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut payload = format!("{timestamp}.").into_bytes();
    payload.extend_from_slice(body);
    // ring's verify compares in constant time.
    if candidates
        .iter()
        .any(|sig| hmac::verify(&key, &payload, sig).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_fail_closed() {
        let secret = b"whsec_test";
        let body = br#"{"id":"evt_1"}"#;
        let sig = sign(secret, 1000, body);
        let header = format!("t=1000,v1={sig}");
        assert_eq!(verify(secret, &header, body, 1000), Ok(()));
        assert_eq!(verify(secret, &header, body, 1000 + TOLERANCE_SECS), Ok(()));
        assert_eq!(
            verify(secret, &header, body, 1001 + TOLERANCE_SECS),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(secret, &header, br#"{"id":"evt_2"}"#, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1000),
            Err(SignatureError::Mismatch)
        );
        // Rotation: several v1 values, one of them right.
        let header = format!("t=1000,v1={},v1={sig}", "00".repeat(32));
        assert_eq!(verify(secret, &header, body, 1000), Ok(()));
        for bad in ["", "t=1000", "v1=abcd", "t=x,v1=abcd", &"t=1,".repeat(1000)] {
            assert!(verify(secret, bad, body, 1000).is_err(), "{bad}");
        }
    }
}
