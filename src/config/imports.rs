//! Resolving an `imports` list: each entry is cleaned, made relative to the importing file's
//! directory unless absolute, and globbed when it holds `*`, `?` or `[` (matches sorted, none
//! is fine). A plain path is returned as is; it is an error only when it is read.
//!
//! Glob matching follows Go's `filepath.Match`: `*` is any run of characters other than `/`
//! (leading dots included), `?` one such character, `[a-z]` / `[^a-z]` a class, `\` escapes.

use std::path::{Component, Path, PathBuf};

use super::ConfigError;

const META: [char; 3] = ['*', '?', '['];

/// Directory entries one import pattern may look at: a pattern such as `/*/*/*` must not
/// walk the whole filesystem.
pub(super) const MAX_GLOB_ENTRIES: usize = 4096;

/// The files `imports` names, in order, relative to `parent` (the importing file).
pub(super) fn resolve(parent: &Path, imports: &[String]) -> Result<Vec<PathBuf>, ConfigError> {
    let base = match parent.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut out = Vec::new();
    for import in imports {
        let import = clean(Path::new(import));
        let path = if import.is_absolute() {
            import
        } else {
            clean(&base.join(import))
        };
        if path.to_string_lossy().contains(META) {
            out.extend(glob(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// Lexical cleaning like Go's `filepath.Clean`: no `.`, `..` resolved where possible, no
/// doubled or trailing separators; an empty result is `.`.
pub(super) fn clean(path: &Path) -> PathBuf {
    let mut parts: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => parts.push(component),
            },
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

/// Every existing path matching `pattern`, sorted within each directory like Go's glob.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let bad = || ConfigError::Pattern {
        pattern: pattern.to_path_buf(),
    };
    let mut seen = 0usize;
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            for path in &mut current {
                path.push(component.as_os_str());
            }
            continue;
        };
        let part = part.to_string_lossy();
        if !part.contains(META) {
            for path in &mut current {
                path.push(part.as_ref());
            }
            continue;
        }
        let compiled: Vec<char> = part.chars().collect();
        if !valid_pattern(&compiled) {
            return Err(bad());
        }
        let mut next = Vec::new();
        for dir in &current {
            let listing = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let Ok(entries) = std::fs::read_dir(listing) else {
                continue;
            };
            let mut names = Vec::new();
            for entry in entries {
                seen += 1;
                if seen > MAX_GLOB_ENTRIES {
                    return Err(ConfigError::PatternTooBroad {
                        pattern: pattern.to_path_buf(),
                        max: MAX_GLOB_ENTRIES,
                    });
                }
                let Some(name) = entry.ok().and_then(|e| e.file_name().into_string().ok()) else {
                    continue;
                };
                let chars: Vec<char> = name.chars().collect();
                if matches(&compiled, &chars) {
                    names.push(name);
                }
            }
            names.sort();
            next.extend(names.into_iter().map(|name| dir.join(name)));
        }
        current = next;
    }
    current.retain(|path| std::fs::symlink_metadata(path).is_ok());
    Ok(current)
}

/// Whether a pattern component is well formed: classes closed and not empty, ranges with
/// both ends, no trailing escape.
fn valid_pattern(pattern: &[char]) -> bool {
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' => {
                if i + 1 >= pattern.len() {
                    return false;
                }
                i += 2;
            }
            '[' => match class(pattern, i, '\0') {
                Some((_, end)) => i = end,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// Parses the class starting at `pattern[start] == '['`: whether `c` is in it and the index
/// just past its `]`; `None` when malformed.
fn class(pattern: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = pattern.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut ranges = 0;
    loop {
        if pattern.get(i) == Some(&']') && ranges > 0 {
            return Some((hit != negated, i + 1));
        }
        let (lo, after) = class_char(pattern, i)?;
        i = after;
        let mut hi = lo;
        if pattern.get(i) == Some(&'-') {
            let (end, after) = class_char(pattern, i + 1)?;
            hi = end;
            i = after;
        }
        hit |= lo <= c && c <= hi;
        ranges += 1;
    }
}

/// One (possibly escaped) character inside a class; `-` and `]` cannot start a range.
fn class_char(pattern: &[char], i: usize) -> Option<(char, usize)> {
    match pattern.get(i)? {
        '-' | ']' => None,
        '\\' => pattern.get(i + 1).map(|&c| (c, i + 2)),
        &c => Some((c, i + 1)),
    }
}

/// Whether `name` (one path component) matches the validated `pattern`.
fn matches(pattern: &[char], name: &[char]) -> bool {
    let Some(&first) = pattern.first() else {
        return name.is_empty();
    };
    match first {
        '*' => {
            let rest = &pattern[1..];
            (0..=name.len()).any(|skip| matches(rest, &name[skip..]))
        }
        '?' => !name.is_empty() && matches(&pattern[1..], &name[1..]),
        '[' => {
            let Some(&c) = name.first() else {
                return false;
            };
            match class(pattern, 0, c) {
                Some((true, end)) => matches(&pattern[end..], &name[1..]),
                _ => false,
            }
        }
        '\\' => {
            pattern.len() > 1
                && name.first() == Some(&pattern[1])
                && matches(&pattern[2..], &name[1..])
        }
        c => name.first() == Some(&c) && matches(&pattern[1..], &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn glob_match(pattern: &str, name: &str) -> bool {
        let pattern: Vec<char> = pattern.chars().collect();
        assert!(valid_pattern(&pattern), "{pattern:?}");
        let name: Vec<char> = name.chars().collect();
        matches(&pattern, &name)
    }

    #[test]
    fn matching_follows_go() {
        for (pattern, name, want) in [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*", ".hidden", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "ab", true),
            ("a*b*c*d*e*", "axbxcxdxe", true),
            ("a*b", "ab", true),
            ("a*b", "axxc", false),
            ("*.toml", "10-a.toml", true),
            ("*.toml", "a.toml.bak", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a[b-d]e", "ace", true),
            ("a[^b-d]e", "ace", false),
            ("a[^b-d]e", "axe", true),
            ("[a-c][x-z]", "bz", true),
            ("a[\\-]b", "a-b", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
        ] {
            assert_eq!(glob_match(pattern, name), want, "{pattern} {name}");
        }
        for bad in ["[", "[^", "[]a]", "[a-", "a\\", "[-]", "[x-]"] {
            let pattern: Vec<char> = bad.chars().collect();
            assert!(!valid_pattern(&pattern), "{bad}");
        }
    }

    #[test]
    fn cleaning_is_lexical() {
        for (raw, want) in [
            ("/a/./b/../c/", "/a/c"),
            ("/../a", "/a"),
            ("a//b", "a/b"),
            ("./a", "a"),
            ("../a/../../b", "../../b"),
            ("", "."),
            (".", "."),
        ] {
            assert_eq!(clean(Path::new(raw)), PathBuf::from(want), "{raw}");
        }
    }

    #[test]
    fn imports_resolve_relative_cleaned_and_globbed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for name in [
            "config_2.toml",
            "config_1.toml",
            "test.toml",
            ".config_0.toml",
        ] {
            fs::write(root.join(name), "").expect("write");
        }
        fs::create_dir_all(root.join("d1")).expect("mkdir");
        fs::create_dir_all(root.join("d2")).expect("mkdir");
        fs::write(root.join("d2/x.toml"), "").expect("write");
        fs::write(root.join("d1/y.toml"), "").expect("write");
        let resolved = resolve(
            &root.join("root.toml"),
            &[
                root.join("config_*.toml").to_string_lossy().into_owned(),
                root.join("./test.toml").to_string_lossy().into_owned(),
                "current.toml".into(),
                "nothing/*.toml".into(),
                "d?/*.toml".into(),
                "sub/../[t]est.toml".into(),
            ],
        )
        .expect("resolve");
        assert_eq!(
            resolved,
            [
                root.join("config_1.toml"),
                root.join("config_2.toml"),
                root.join("test.toml"),
                root.join("current.toml"),
                root.join("d1/y.toml"),
                root.join("d2/x.toml"),
                root.join("test.toml"),
            ]
        );
    }

    #[test]
    fn relative_parent_resolves_relative_to_its_directory() {
        assert_eq!(
            resolve(Path::new("main.toml"), &["a.toml".into()]).expect("resolve"),
            [PathBuf::from("a.toml")]
        );
        assert_eq!(
            resolve(Path::new("etc/main.toml"), &["../b.toml".into()]).expect("resolve"),
            [PathBuf::from("b.toml")]
        );
    }

    #[test]
    fn malformed_pattern_is_an_error() {
        let err = resolve(Path::new("/etc/main.toml"), &["conf.d/[*.toml".into()])
            .expect_err("bad pattern");
        assert_eq!(
            err.to_string(),
            "import /etc/conf.d/[*.toml: syntax error in pattern"
        );
    }
}
