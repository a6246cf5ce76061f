//! The `X-Kong-Signature` header: an HMAC-SHA1 of the exact body bytes, keyed by the hook's secret,
//! so a receiver can check that a delivery came from us and was not altered on the way (spec §6).
//!
//! SHA-1 is weak as a hash, but HMAC-SHA1 is still sound as a MAC, and it is what Kong's receivers
//! already verify; changing the algorithm would break every one of them.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The header that carries the signature; lower-case because HTTP/2 requires it and HTTP/1 ignores case.
pub const SIGNATURE_HEADER: &str = "x-kong-signature";

/// `sha1=<lower-case hex HMAC-SHA1(secret, body)>`, the value of [`SIGNATURE_HEADER`].
///
/// `body` must be the bytes exactly as sent: any re-serialisation after signing breaks the check.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
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
}
