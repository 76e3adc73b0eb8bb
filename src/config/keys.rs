//! Dotted key paths: how they are written (TOML quoting), where a key sits in a file (row and
//! column, 1-based), and the warnings for keys the schema does not know.

use std::path::Path;

use toml::de::{DeTable, DeValue};

/// A key as TOML writes it: bare when it can be, else quoted (single quotes preferred).
pub(super) fn key_text(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        string_text(key)
    }
}

/// A string as TOML: `'literal'` unless it holds a single quote or a control character, then
/// a `"basic"` string with escapes.
pub(super) fn string_text(s: &str) -> String {
    if !s.contains('\'') && !s.chars().any(char::is_control) {
        return format!("'{s}'");
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Segments joined with dots, each written as a TOML key.
pub(super) fn dotted(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| key_text(s))
        .collect::<Vec<_>>()
        .join(".")
}

/// The map keys (and array indexes) leading to what serde_ignored reported.
pub(super) fn segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    let mut out = Vec::new();
    collect(path, &mut out);
    out
}

fn collect(path: &serde_ignored::Path<'_>, out: &mut Vec<String>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            collect(parent, out);
            out.push(index.to_string());
        }
        Path::Map { parent, key } => {
            collect(parent, out);
            out.push(key.clone());
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => collect(parent, out),
    }
}

/// The 1-based row and column of a byte offset.
pub(super) fn row_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let row = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (row, column)
}

/// Where the last key of `segments` is written in the parsed document.
pub(super) fn key_offset(doc: &DeTable<'_>, segments: &[String]) -> Option<usize> {
    let (first, rest) = segments.split_first()?;
    let (key, mut value) = doc.iter().find(|(k, _)| k.get_ref().as_ref() == first)?;
    let mut offset = key.span().start;
    for segment in rest {
        match value.get_ref() {
            DeValue::Table(table) => {
                let (key, next) = table
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == segment)?;
                offset = key.span().start;
                value = next;
            }
            DeValue::Array(items) => {
                let index: usize = segment.parse().ok()?;
                value = items.get(index)?;
                offset = value.span().start;
            }
            _ => return None,
        }
    }
    Some(offset)
}

/// Warns once per unknown key, with its file, row and column (0 when it cannot be found).
pub(super) fn warn_unknown(path: &Path, text: &str, unknown: &[Vec<String>]) {
    if unknown.is_empty() {
        return;
    }
    let doc = DeTable::parse(text).ok();
    for segments in unknown {
        let (row, column) = doc
            .as_ref()
            .and_then(|doc| key_offset(doc.get_ref(), segments))
            .map(|offset| row_column(text, offset))
            .unwrap_or((0, 0));
        log::warn!(
            "Ignoring unknown key in TOML file={} row={row} column={column} key={}",
            path.display(),
            dotted(segments)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_are_bare_or_quoted() {
        assert_eq!(key_text("grpc_histogram"), "grpc_histogram");
        assert_eq!(key_text("diff-service"), "diff-service");
        assert_eq!(
            key_text("io.containerd.gc.v1.scheduler"),
            "'io.containerd.gc.v1.scheduler'"
        );
        assert_eq!(key_text(""), "''");
        assert_eq!(key_text("it's"), "\"it's\"");
        assert_eq!(
            dotted(&owned(&["plugins", "io.x.v1.y", "key"])),
            "plugins.'io.x.v1.y'.key"
        );
    }

    #[test]
    fn strings_fall_back_to_escapes() {
        assert_eq!(string_text("/run/x"), "'/run/x'");
        assert_eq!(string_text("a'b"), "\"a'b\"");
        assert_eq!(string_text("a\"b'\n\t\\"), "\"a\\\"b'\\n\\t\\\\\"");
        assert_eq!(string_text("\u{1}"), "\"\\u0001\"");
        for s in ["a'b", "x\"y\u{7f}", "\u{8}\u{c}\r", "plain \u{e9}"] {
            let doc = format!("k = {}\n", string_text(s));
            let table: toml::Table = toml::from_str(&doc).expect(&doc);
            assert_eq!(table["k"].as_str(), Some(s));
        }
    }

    #[test]
    fn rows_and_columns_are_one_based_in_characters() {
        let text = "a = 1\nb\u{e9} = 2\n";
        assert_eq!(row_column(text, 0), (1, 1));
        assert_eq!(row_column(text, 6), (2, 1));
        assert_eq!(row_column(text, 9), (2, 3));
        assert_eq!(row_column(text, 100), (3, 1));
    }

    #[test]
    fn finds_keys_in_headers_dotted_keys_and_arrays() {
        let text = "version = 3\n[grpc]\n  bogus = 1\n[proxy_plugins.'a.b']\nx.y = 2\n[[list]]\nn = 1\n[[list]]\nm = 2\n";
        let doc = DeTable::parse(text).expect("parse");
        let at = |parts: &[&str]| {
            key_offset(doc.get_ref(), &owned(parts)).map(|offset| row_column(text, offset))
        };
        assert_eq!(at(&["grpc", "bogus"]), Some((3, 3)));
        assert_eq!(at(&["proxy_plugins", "a.b", "x", "y"]), Some((5, 3)));
        assert_eq!(at(&["list", "1", "m"]), Some((9, 1)));
        assert_eq!(at(&["grpc", "missing"]), None);
    }

    #[test]
    fn ignored_paths_become_segments() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Known {
            a: Option<Vec<Inner>>,
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            b: i64,
        }
        let mut found = Vec::new();
        let text = "a = [{b = 1, c = 2}]\n'd.e' = 3\n";
        let de = toml::Deserializer::parse(text).expect("parse");
        let _: Known = serde_ignored::deserialize(de, |p| found.push(segments(&p))).expect("de");
        found.sort();
        assert_eq!(found, [owned(&["a", "0", "c"]), owned(&["d.e"])]);
    }
}
