//! Signing as the Standard Webhooks specification says: the secret is `whsec_` and the
//! base64 of 32 random bytes; each request carries `webhook-id`, `webhook-timestamp`
//! (Unix seconds) and `webhook-signature: v1,<base64 of HMAC-SHA256 over
//! "{id}.{timestamp}.{body}", keyed with the secret's decoded bytes>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secrets::SecretsError;

/// What every webhook secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> Result<Zeroizing<String>, SecretsError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| SecretsError::Random(e.to_string()))?;
    Ok(Zeroizing::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes.as_ref()))))
}

/// The signing key of a secret (the base64 after `whsec_`), or `None` when it is not one.
pub fn key_of(secret: &str) -> Option<Zeroizing<Vec<u8>>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX)?;
    STANDARD.decode(encoded).ok().filter(|key| !key.is_empty()).map(Zeroizing::new)
}

/// The `webhook-signature` value of a message: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under `key`.
///
/// The example is the specification's own test vector:
///
/// ```
/// # use keypal_server::webhook_signing::{key_of, signature};
/// let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// let body = r#"{"test": 2432232314}"#;
/// assert_eq!(
///     signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body.as_bytes()),
///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/// );
/// ```
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as hmac::KeyInit>::new(&Default::default()));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn new_secrets_decode_to_32_bytes_and_differ() {
        let a = new_secret().expect("secret");
        let b = new_secret().expect("secret");
        assert_ne!(*a, *b);
        assert_eq!(key_of(&a).expect("key").len(), 32);
        assert!(key_of("whsec_").is_none());
        assert!(key_of("not a secret").is_none());
    }
}
