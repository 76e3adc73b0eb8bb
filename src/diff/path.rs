//! Root-scoped paths: tar entry names cleaned into components below a root, and symlinks
//! resolved as if the root were `/`, so no lookup ever leaves it (containerd's `fs.RootPath`).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::errdefs::Error;

/// How many symlinks one lookup may follow before it is taken for a loop.
const MAX_LINKS: usize = 255;

/// Cleans a tar entry name into its components below the root, the way Go's
/// `filepath.Clean` does: `.` and empty components vanish, `x/..` cancels, a leading `/` is
/// dropped (absolute names are taken relative to the root, as containerd does). A `..` that
/// would climb above the root is refused rather than clamped. An empty result names the root.
pub fn clean_name(name: &[u8]) -> Result<Vec<OsString>, Error> {
    let mut components: Vec<OsString> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if components.pop().is_none() {
                    return Err(Error::invalid_argument(format!(
                        "invalid archive: path {:?} climbs out of the root",
                        String::from_utf8_lossy(name)
                    )));
                }
            }
            part => components.push(OsStr::from_bytes(part).to_os_string()),
        }
    }
    Ok(components)
}

/// Joins cleaned components onto `root`, resolving every symlink met on the way inside `root`:
/// an absolute target restarts at `root`, a `..` never climbs above it, and a component that
/// does not exist yet is taken literally. The final component is resolved too; callers that
/// must not follow it resolve only the parent.
pub fn resolve_in_root(root: &Path, components: &[OsString]) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(component) = pending.pop_front() {
        if component.is_empty() || component == "." {
            continue;
        }
        if component == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = join(root, &resolved);
        candidate.push(&component);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: too many links", candidate.display()),
                    ));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for part in lexical_components(&target).into_iter().rev() {
                    pending.push_front(part);
                }
            }
            Ok(_) => resolved.push(component),
            Err(err) if err.kind() == io::ErrorKind::NotFound => resolved.push(component),
            Err(err) => return Err(err),
        }
    }
    Ok(join(root, &resolved))
}

/// A symlink target's components with `x/..` cancelled lexically (as Go's `filepath.Join`
/// does) and leading `..` kept, to climb from the link's directory.
fn lexical_components(target: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for component in target.components() {
        match component {
            Component::Normal(name) => out.push(name.to_os_string()),
            Component::ParentDir => {
                if out.last().is_some_and(|last| last != "..") {
                    out.pop();
                } else if !target.is_absolute() {
                    out.push("..".into());
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn join(root: &Path, components: &[OsString]) -> PathBuf {
    let mut path = root.to_path_buf();
    for component in components {
        path.push(component);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(components: &[OsString]) -> Vec<&str> {
        components
            .iter()
            .map(|c| c.to_str().expect("utf-8"))
            .collect()
    }

    #[test]
    fn clean_name_drops_dots_and_leading_slash() {
        assert_eq!(
            names(&clean_name(b"/./a//b/./c/").expect("clean")),
            ["a", "b", "c"]
        );
        assert_eq!(names(&clean_name(b"a/x/../b").expect("clean")), ["a", "b"]);
        assert!(clean_name(b"./").expect("clean").is_empty());
    }

    #[test]
    fn clean_name_refuses_climbing_out() {
        for name in [&b"../escape"[..], b"a/../../escape", b"/.."] {
            let err = clean_name(name).expect_err("must refuse");
            assert_eq!(err.class(), crate::errdefs::Class::InvalidArgument);
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).expect("mkdir");
        symlink("/", root.join("slash")).expect("symlink");
        symlink("../../../..", root.join("real/up")).expect("symlink");
        symlink("/real/sub", root.join("abs")).expect("symlink");
        symlink("real/sub", root.join("rel")).expect("symlink");
        symlink("loop", root.join("loop")).expect("symlink");

        let resolve = |name: &[u8]| {
            resolve_in_root(root, &clean_name(name).expect("clean")).expect("resolve")
        };
        assert_eq!(resolve(b"slash/etc/passwd"), root.join("etc/passwd"));
        assert_eq!(resolve(b"real/up/etc"), root.join("etc"));
        assert_eq!(resolve(b"abs/file"), root.join("real/sub/file"));
        assert_eq!(resolve(b"rel/file"), root.join("real/sub/file"));
        assert_eq!(resolve(b"missing/file"), root.join("missing/file"));
        assert!(resolve_in_root(root, &clean_name(b"loop/x").expect("clean")).is_err());
    }
}
