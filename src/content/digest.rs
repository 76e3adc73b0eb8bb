//! Content digests: parsing, validation and formatting of `sha256:<hex>` strings.
//!
//! Only sha256 is accepted. Validation follows go-digest's order of checks, so the reasons in
//! the error messages match what containerd reports for the same input.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::errdefs::Error;

/// The only algorithm the store supports.
pub const SHA256: &str = "sha256";

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses and validates `s`; every failure is InvalidArgument `invalid digest "s": <reason>`.
    pub fn parse(s: &str) -> Result<Digest, Error> {
        validate(s)
            .map(|hex| Digest {
                hex: hex.to_owned(),
            })
            .map_err(|reason| Error::invalid_argument(format!("invalid digest {s:?}: {reason}")))
    }

    /// go-digest's reason for rejecting `s`, for messages that word it their own way.
    pub fn check(s: &str) -> Result<(), &'static str> {
        validate(s).map(|_| ())
    }

    /// The digest of a finished sha256 hash.
    pub fn from_sha256(bytes: &[u8; 32]) -> Digest {
        let mut hex = String::with_capacity(64);
        for b in bytes {
            hex.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble is below 16"));
            hex.push(char::from_digit(u32::from(b & 0xf), 16).expect("nibble is below 16"));
        }
        Digest { hex }
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_sha256(&Sha256::digest(data).into())
    }

    /// The algorithm part, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        SHA256
    }

    /// The 64 lowercase hex characters after the colon.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

/// Returns the encoded part of a valid digest, or go-digest's reason for rejecting it.
fn validate(s: &str) -> Result<&str, &'static str> {
    const FORMAT: &str = "invalid checksum digest format";
    let (algorithm, encoded) = match s.find(':') {
        Some(i) if i > 0 && i + 1 < s.len() => (&s[..i], &s[i + 1..]),
        _ => return Err(FORMAT),
    };
    if algorithm != SHA256 {
        let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        let encoded_ok = encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        return Err(if algorithm_ok && encoded_ok {
            "unsupported digest algorithm"
        } else {
            FORMAT
        });
    }
    if encoded.len() != 64 {
        return Err("invalid checksum digest length");
    }
    if !encoded
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(FORMAT);
    }
    Ok(encoded)
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256}:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errdefs::Class;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_accepts_lowercase_sha256_and_round_trips() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn of_matches_known_sha256_values() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_rejects_invalid_digests_with_reasons() {
        let upper = EMPTY.to_uppercase().replacen("SHA256", "sha256", 1);
        let short = &EMPTY[..EMPTY.len() - 1];
        let long = format!("{EMPTY}0");
        let bad_hex = EMPTY.replacen('e', "g", 1);
        let table: &[(&str, &str)] = &[
            ("", "invalid checksum digest format"),
            ("sha256", "invalid checksum digest format"),
            ("sha256:", "invalid checksum digest format"),
            (":abc", "invalid checksum digest format"),
            ("sha256:zz", "invalid checksum digest length"),
            (&upper, "invalid checksum digest format"),
            (short, "invalid checksum digest length"),
            (&long, "invalid checksum digest length"),
            (&bad_hex, "invalid checksum digest format"),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e",
                "unsupported digest algorithm",
            ),
            ("sha512:abcd", "unsupported digest algorithm"),
            ("SHA256:abcd", "invalid checksum digest format"),
            ("sha256:../../etc/passwd", "invalid checksum digest length"),
        ];
        for (input, reason) in table {
            let err = Digest::parse(input).unwrap_err();
            assert_eq!(err.class(), Class::InvalidArgument, "{input:?}");
            assert_eq!(
                err.message(),
                format!("invalid digest {input:?}: {reason}"),
                "{input:?}"
            );
        }
    }
}
