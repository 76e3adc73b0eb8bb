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
            "identifier {} greater than maximum length ({MAX_LENGTH} characters): invalid argument",
            go_quote(s)
        )));
    }
    if !matches_rule(s) {
        return Err(Error::invalid_argument(format!(
            "identifier {} must match {PATTERN}: invalid argument",
            go_quote(s)
        )));
    }
    Ok(())
}

/// The most of a caller's input one quote in a message repeats.
pub const MAX_QUOTED: usize = 256;

/// `s` quoted the way Go's `%q` (strconv.Quote) does, so messages match containerd's byte
/// for byte: `\x01` rather than Rust's `\u{1}`. Go's printable test is approximated by
/// "not a control, format, private-use or non-ASCII space character". Input longer than
/// [`MAX_QUOTED`] bytes is cut there and followed by `...(N bytes)`: an error must not
/// carry a megabyte name back to the client (containerd quotes it whole).
pub fn go_quote(s: &str) -> String {
    let mut cut = s.len().min(MAX_QUOTED);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let (shown, rest) = s.split_at(cut);
    let mut out = String::with_capacity(shown.len() + 2);
    out.push('"');
    for c in shown.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    if !rest.is_empty() {
        out.push_str(&format!("...({} bytes)", s.len()));
    }
    out
}

fn go_printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let n = c as u32;
    let format_or_private = matches!(
        n,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
            | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
            | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF
    );
    !(c.is_control() || c.is_whitespace() || format_or_private)
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
        assert_eq!(
            validate(&long).expect_err("long").message(),
            format!(
                "identifier \"{long}\" greater than maximum length (76 characters): invalid argument"
            )
        );
        assert_eq!(
            validate("a b").expect_err("space").message(),
            "identifier \"a b\" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"
        );
    }

    #[test]
    fn quotes_like_go() {
        for (input, quoted) in [
            ("plain", r#""plain""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("tab\there\n", r#""tab\there\n""#),
            ("\u{1}\u{7f}", r#""\x01\x7f""#),
            ("ä日本", "\"ä日本\""),
            ("\u{a0}\u{200b}\u{feff}", r#""\u00a0\u200b\ufeff""#),
            ("\u{10ffff}", r#""\U0010ffff""#),
        ] {
            assert_eq!(go_quote(input), quoted, "{input:?}");
        }
        assert_eq!(
            validate("a\u{1}").expect_err("control").message(),
            "identifier \"a\\x01\" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"
        );
    }
}
