//! Webhook signing: the secrets and the signatures of the Standard Webhooks
//! specification (standardwebhooks.com), so that receivers verify deliveries with the
//! spec's own libraries.
//!
//! A secret is written `whsec_` followed by the standard base64 of its key bytes; a
//! signature is `v1,` followed by the standard base64 of HMAC-SHA256 over
//! `{msg_id}.{timestamp}.{body}`.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{EngineError, Result};

/// The prefix of a secret's text form.
const PREFIX: &str = "whsec_";
/// The fewest key bytes a secret may have (the spec's minimum).
const MIN_KEY_BYTES: usize = 24;
/// The most key bytes a secret may have (the spec's maximum).
const MAX_KEY_BYTES: usize = 64;

/// Standard base64 that decodes with or without the trailing `=` padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A webhook signing secret: the raw HMAC key bytes.
///
/// Its `Debug` form shows only the key's length; its `Display` form is the full
/// `whsec_...` text, to be shown to the secret's owner only.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Makes a new secret of 32 bytes from the operating system's randomness (two
    /// version 4 UUIDs, 244 random bits).
    pub fn generate() -> Secret {
        let mut key = Vec::with_capacity(32);
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Secret(key)
    }

    /// Parses the text form `whsec_<standard base64>` (padded or not) of a key of 24 to
    /// 64 bytes.
    pub fn parse(s: &str) -> Result<Secret> {
        let Some(encoded) = s.strip_prefix(PREFIX) else {
            return Err(EngineError::invalid(format!(
                "secret {} does not start with {PREFIX}; give {PREFIX} followed by the \
                 standard base64 of 24 to 64 random bytes",
                preview(s)
            )));
        };
        let key = LENIENT.decode(encoded).map_err(|e| {
            let what = match e {
                base64::DecodeError::InvalidByte(at, b'=') => format!(
                    "has '=' padding at position {}, where it does not belong",
                    at + PREFIX.len()
                ),
                base64::DecodeError::InvalidByte(at, byte) if byte.is_ascii_graphic() => format!(
                    "has '{}' at position {}, which is not a standard base64 character \
                     (A-Z, a-z, 0-9, + and /)",
                    char::from(byte),
                    at + PREFIX.len()
                ),
                base64::DecodeError::InvalidByte(at, _) => format!(
                    "has a space or other non-base64 character at position {}",
                    at + PREFIX.len()
                ),
                _ => "is not well-formed standard base64 (wrong length or padding)".to_owned(),
            };
            EngineError::invalid(format!("secret {} {what}", preview(s)))
        })?;
        if key.len() < MIN_KEY_BYTES || key.len() > MAX_KEY_BYTES {
            return Err(EngineError::invalid(format!(
                "secret {} decodes to {} bytes; it must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} \
                 bytes",
                preview(s),
                key.len()
            )));
        }
        Ok(Secret(key))
    }

    /// Signs one delivery: `v1,` followed by the standard base64 of
    /// HMAC-SHA256(key, `{msg_id}.{timestamp_secs}.{body}`), the value of the
    /// `webhook-signature` header.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            unreachable!("HMAC-SHA256 accepts keys of any length")
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The first characters of a secret, safe to put in an error message.
fn preview(s: &str) -> String {
    let head: String = s.chars().take(6).collect();
    if head.len() < s.len() {
        format!("\"{head}...\"")
    } else {
        format!("\"{head}\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD.encode(&self.0))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_test_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signature_depends_on_every_part() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = secret.sign("msg_1", 1, b"{}");
        assert_ne!(base, secret.sign("msg_2", 1, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 2, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 1, b"[]"));
        assert_ne!(base, Secret::generate().sign("msg_1", 1, b"{}"));
    }

    #[test]
    fn display_parse_round_trip() {
        let official = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(Secret::parse(official).unwrap().to_string(), official);

        let secret = Secret::generate();
        assert_eq!(secret.0.len(), 32);
        let text = secret.to_string();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).unwrap().0, secret.0);
        assert_ne!(Secret::generate().0, secret.0);
    }

    #[test]
    fn parse_accepts_unpadded_base64() {
        // 32 bytes: 44 characters padded, 43 without the `=`.
        let padded = Secret::generate().to_string();
        assert!(padded.ends_with('='), "{padded}");
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(
            Secret::parse(unpadded).unwrap().0,
            Secret::parse(&padded).unwrap().0
        );
    }

    #[test]
    fn parse_errors() {
        let cases = [
            ("", "does not start with whsec_"),
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "does not start with whsec_",
            ),
            (
                "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "does not start with whsec_",
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa!w",
                "'!' at position 36",
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS_",
                "'_' at position 37",
            ),
            (
                "whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "non-base64 character at position 6",
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwX",
                "wrong length or padding",
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",
                "'=' padding at position 38",
            ),
            ("whsec_", "decodes to 0 bytes"),
            ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
        ];
        for (input, expected) in cases {
            let err = Secret::parse(input).unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::Invalid);
            assert!(
                err.message.starts_with("secret "),
                "{input:?}: {}",
                err.message
            );
            assert!(err.message.contains(expected), "{input:?}: {}", err.message);
            // the message never carries more than the first 6 characters
            if input.len() > 10 {
                assert!(
                    !err.message.contains(&input[6..]),
                    "{input:?}: {}",
                    err.message
                );
            }
        }
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        let err = Secret::parse(&long).unwrap_err();
        assert!(
            err.message.contains("decodes to 65 bytes"),
            "{}",
            err.message
        );
        let max = format!("whsec_{}", STANDARD.encode([7u8; 64]));
        assert!(Secret::parse(&max).is_ok());
    }

    #[test]
    fn debug_hides_the_key() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let debug = format!("{secret:?}");
        assert_eq!(debug, "Secret(<24 bytes, redacted>)");
    }
}
