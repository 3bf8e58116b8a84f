//! Bearer secrets (device tokens, the generated gateway token) and their digests.
//!
//! A secret is shown once and never stored; the store keeps its SHA-256 digest. The secrets are 256 bits
//! from the OS CSPRNG, so a plain SHA-256 digest is safe against guessing (no slow hash needed), and a
//! lookup by digest leaks nothing useful through timing.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret token value. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// 256 random bits, base64url without padding (43 characters).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        TokenSecret(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Wraps a value presented by a client or read from configuration.
    pub fn from_presented(value: impl Into<String>) -> Self {
        TokenSecret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// SHA-256 of a token; the only form in which a token is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(TokenDigest(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality, for comparing a presented token's digest against a stored one.
    pub fn ct_eq(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell digests apart in logs; the digest is not a secret, but keep it short.
        write!(f, "TokenDigest({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_distinct_and_urlsafe() {
        let a = TokenSecret::generate();
        let b = TokenSecret::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = TokenSecret::from_presented("hunter2-super-secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn digest_compares_in_constant_time() {
        let secret = TokenSecret::from_presented("abc");
        assert!(secret.digest().ct_eq(&TokenSecret::from_presented("abc").digest()));
        assert!(!secret.digest().ct_eq(&TokenSecret::from_presented("abd").digest()));
    }
}
