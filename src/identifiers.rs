//! containerd's identifier rule (namespaces, and later containers, snapshots…):
//! alphanumeric components joined by single `.`, `_` or `-`, at most 76 characters.

use crate::errdefs::Error;

/// The longest identifier accepted.
pub const MAX_LENGTH: usize = 76;

/// The rule as containerd words it in its messages.
const PATTERN: &str = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$";

/// Checks `s`; the error is InvalidArgument with containerd's message.
pub fn validate(s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid_argument(
            "identifier must not be empty: invalid argument",
        ));
    }
    if s.len() > MAX_LENGTH {
        return Err(Error::invalid_argument(format!(
            "identifier {s:?} greater than maximum length ({MAX_LENGTH} characters): invalid argument"
        )));
    }
    if !matches_rule(s) {
        return Err(Error::invalid_argument(format!(
            "identifier {s:?} must match {PATTERN}: invalid argument"
        )));
    }
    Ok(())
}

fn matches_rule(s: &str) -> bool {
    let mut previous_separator = true; // the start behaves like a separator
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            previous_separator = false;
        } else if matches!(c, '.' | '_' | '-') {
            if previous_separator {
                return false;
            }
            previous_separator = true;
        } else {
            return false;
        }
    }
    !previous_separator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_identifiers() {
        for s in [
            "default",
            "Default",
            "k8s.io",
            "a-b_c.d",
            "0",
            "moby",
            &"a".repeat(MAX_LENGTH),
        ] {
            assert!(validate(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn invalid_identifiers() {
        for s in [
            "-bad-", "bad-", ".x", "a..b", "a._b", "a b", "ä", "a/b", "__", "foo@bar",
        ] {
            let err = validate(s).expect_err(s);
            assert_eq!(err.class(), crate::errdefs::Class::InvalidArgument);
            assert!(err.message().contains("must match"), "{}", err.message());
        }
        assert_eq!(
            validate("").expect_err("empty").message(),
            "identifier must not be empty: invalid argument"
        );
        let long = "a".repeat(MAX_LENGTH + 1);
        assert!(validate(&long)
            .expect_err("long")
            .message()
            .contains("greater than maximum length (76 characters)"));
    }
}
