//! Delivery signatures, so a receiver can check that a delivery came from us and was not
//! altered on the way. Two schemes, chosen per hook by `config.signature`:
//!
//! - `kong` (spec §6): `X-Kong-Signature: sha1=<hex HMAC-SHA1(secret, body)>`. SHA-1 is weak as a
//!   hash, but HMAC-SHA1 is still sound as a MAC, and it is what Kong's receivers already verify;
//!   changing the algorithm would break every one of them.
//! - `standard` (spec §8, [Standard Webhooks](https://www.standardwebhooks.com/)):
//!   `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256(key,
//!   "id.timestamp.body")>`, keyed by the base64-decoded part of a `whsec_…` secret. Binding the
//!   id and the time into the MAC lets receivers refuse replays, which Kong's scheme cannot.
//!
//! Everything here is a pure function of its inputs (the clock and the random source are the
//! caller's, except in [`generate_standard_secret`]).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// The header that carries the signature; lower-case because HTTP/2 requires it and HTTP/1 ignores case.
pub const SIGNATURE_HEADER: &str = "x-kong-signature";

/// Standard Webhooks: the message id (our delivery id), stable across retries.
pub(crate) const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: Unix seconds when the attempt was signed.
pub(crate) const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: one or more space-separated `v1,<base64>` signatures.
pub(crate) const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// The prefix of Standard Webhooks secrets.
pub(crate) const STANDARD_SECRET_PREFIX: &str = "whsec_";
/// Shortest key the Standard Webhooks spec allows (192 bits).
pub(crate) const MIN_STANDARD_KEY_BYTES: usize = 24;
/// Longest key the Standard Webhooks spec allows (512 bits).
pub(crate) const MAX_STANDARD_KEY_BYTES: usize = 64;
/// Key length of the secrets we generate.
const GENERATED_KEY_BYTES: usize = 32;

/// How long a rotated-out secret keeps signing beside the new one (spec §8): receivers get a day
/// to switch.
pub(crate) const ROTATION_GRACE_SECONDS: i64 = 24 * 3600;

/// Standard base64 that accepts secrets with or without their `=` padding, as the reference
/// libraries do.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `sha1=<lower-case hex HMAC-SHA1(secret, body)>`, the value of [`SIGNATURE_HEADER`].
///
/// `body` must be the bytes exactly as sent: any re-serialisation after signing breaks the check.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha1={}",
        hex::encode(kong_mac(secret, body).finalize().into_bytes())
    )
}

/// Whether `header` (an [`SIGNATURE_HEADER`] value, `sha1=<hex>`) is the signature of `body` by
/// `secret`: what a receiver of Kong's deliveries checks (the Kong relay, spec §13). Compared in
/// constant time; hex of either case is accepted, as Kong's receivers accept it.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .trim()
        .strip_prefix("sha1=")
        .and_then(|hex| hex::decode(hex).ok())
    else {
        return false;
    };
    kong_mac(secret, body).verify_slice(&tag).is_ok()
}

/// HMAC-SHA1 of `body` keyed by `secret`, the one computation behind signing and verifying.
fn kong_mac(secret: &[u8], body: &[u8]) -> Hmac<Sha1> {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac
}

/// Why a string is not a Standard Webhooks secret; the messages are shown to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSecret {
    #[error("a standard signature secret must start with 'whsec_'")]
    MissingPrefix,
    #[error("a standard signature secret must be 'whsec_' followed by base64")]
    NotBase64,
    #[error(
        "a standard signature secret must encode {MIN_STANDARD_KEY_BYTES} to {MAX_STANDARD_KEY_BYTES} bytes, not {0}"
    )]
    Length(usize),
}

/// The HMAC key of a `whsec_<base64>` secret.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, InvalidSecret> {
    let encoded = secret
        .strip_prefix(STANDARD_SECRET_PREFIX)
        .ok_or(InvalidSecret::MissingPrefix)?;
    let key = LENIENT_BASE64
        .decode(encoded)
        .map_err(|_| InvalidSecret::NotBase64)?;
    if !(MIN_STANDARD_KEY_BYTES..=MAX_STANDARD_KEY_BYTES).contains(&key.len()) {
        return Err(InvalidSecret::Length(key.len()));
    }
    Ok(key)
}

/// A fresh `whsec_` secret of 32 bytes from the operating system's random source.
pub(crate) fn generate_standard_secret() -> Result<String, getrandom::Error> {
    let mut key = [0u8; GENERATED_KEY_BYTES];
    getrandom::fill(&mut key)?;
    Ok(format!("{STANDARD_SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`: one Standard Webhooks signature.
pub fn standard_signature(key: &[u8], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The three Standard Webhooks headers for one message, signed by every secret in `secrets`
/// (the current one first, then a rotated-out one still in its grace period). A secret that is
/// not a valid `whsec_` secret (only possible for hooks stored before validation) is skipped.
pub fn standard_headers(
    secrets: &[&str],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let signatures: Vec<String> = secrets
        .iter()
        .filter_map(|secret| standard_key(secret).ok())
        .map(|key| standard_signature(&key, message_id, timestamp, body))
        .collect();
    vec![
        (WEBHOOK_ID_HEADER.into(), message_id.to_string()),
        (WEBHOOK_TIMESTAMP_HEADER.into(), timestamp.to_string()),
        (WEBHOOK_SIGNATURE_HEADER.into(), signatures.join(" ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_vector() {
        // Vector from the spec (§6), computed outside this implementation.
        assert_eq!(
            signature(b"hunter2", b"foobar"),
            "sha1=47632029fcc7936dc59ff90b5bb736a44c74ab62"
        );
    }

    #[test]
    fn verify_accepts_exactly_the_signature_of_the_body() {
        let good = "sha1=47632029fcc7936dc59ff90b5bb736a44c74ab62";
        assert!(verify(b"hunter2", b"foobar", good));
        assert!(verify(
            b"hunter2",
            b"foobar",
            &good.to_uppercase().replace("SHA1=", "sha1=")
        ));
        assert!(!verify(b"hunter2", b"foobaR", good));
        assert!(!verify(b"hunter3", b"foobar", good));
        for bad in [
            "",
            "sha1=",
            "47632029fcc7936dc59ff90b5bb736a44c74ab62",
            "sha1=zz",
            "sha256=47632029fcc7936dc59ff90b5bb736a44c74ab62",
            "sha1=47632029fcc7936dc59ff90b5bb736a44c74ab",
        ] {
            assert!(!verify(b"hunter2", b"foobar", bad), "{bad}");
        }
    }

    #[test]
    fn matches_rfc_2202_test_case_2() {
        // RFC 2202 §3, test case 2: a short key, so no key hashing involved.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn a_long_key_and_an_empty_body_still_sign() {
        // RFC 2202 §3, test case 6: an 80-byte key, longer than SHA-1's 64-byte block.
        assert_eq!(
            signature(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "sha1=aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
        assert!(signature(b"k", b"").starts_with("sha1="));
        assert_eq!(signature(b"k", b"").len(), "sha1=".len() + 40);
    }

    #[test]
    fn standard_matches_the_published_vector() {
        // The Standard Webhooks reference libraries' vector, checked with the `standardwebhooks`
        // package from PyPI (`Webhook(secret).sign(...)`), not with this code.
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            standard_signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn standard_headers_carry_one_signature_per_secret() {
        let (old, new) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            generate_standard_secret().unwrap(),
        );
        let headers = standard_headers(&[&new, old], "msg_1", 1614265330, b"{}");
        assert_eq!(headers[0], (WEBHOOK_ID_HEADER.into(), "msg_1".into()));
        assert_eq!(
            headers[1],
            (WEBHOOK_TIMESTAMP_HEADER.into(), "1614265330".into())
        );
        let sigs: Vec<&str> = headers[2].1.split(' ').collect();
        assert_eq!(
            sigs,
            [
                standard_signature(&standard_key(&new).unwrap(), "msg_1", 1614265330, b"{}"),
                standard_signature(&standard_key(old).unwrap(), "msg_1", 1614265330, b"{}"),
            ]
        );
    }

    #[test]
    fn standard_secrets_are_checked() {
        let generated = generate_standard_secret().unwrap();
        assert_eq!(standard_key(&generated).unwrap().len(), GENERATED_KEY_BYTES);
        assert_ne!(generated, generate_standard_secret().unwrap());
        // Unpadded base64 is accepted, as the reference libraries accept it.
        assert!(generated.ends_with('='));
        assert_eq!(
            standard_key(generated.trim_end_matches('=')).unwrap(),
            standard_key(&generated).unwrap()
        );
        assert_eq!(
            standard_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(InvalidSecret::MissingPrefix)
        );
        assert_eq!(
            standard_key("whsec_not base64!"),
            Err(InvalidSecret::NotBase64)
        );
        assert_eq!(
            standard_key("whsec_c2hvcnQ="),
            Err(InvalidSecret::Length(5))
        );
        assert_eq!(standard_key("whsec_"), Err(InvalidSecret::Length(0)));
    }
}
