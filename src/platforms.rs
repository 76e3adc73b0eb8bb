//! Platform specifiers (`linux/arm64/v8`) as containerd's `platforms` package reads them,
//! and the host's own platform.

use oci_spec::image::{Arch, Os, Platform};

use crate::errdefs::Error;

/// Parses a platform specifier like containerd's `platforms.Parse`: `os`, `arch`,
/// `os/arch` or `os/arch/variant`, with the usual architecture aliases.
pub fn parse(spec: &str) -> Result<Platform, Error> {
    let bad = |why: &str| Error::invalid_argument(format!("{spec:?}: {why}: invalid argument"));
    let lower = spec.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if parts.len() > 3 || !parts.iter().all(|p| valid(p)) {
        return Err(bad("unknown operating system or architecture"));
    }
    const OSES: &[&str] = &[
        "linux",
        "windows",
        "darwin",
        "freebsd",
        "netbsd",
        "openbsd",
        "solaris",
        "illumos",
        "android",
        "ios",
        "aix",
        "plan9",
        "dragonfly",
        "js",
        "wasip1",
    ];
    let (os, arch, variant) = match parts.as_slice() {
        [one] if OSES.contains(one) => (one.to_string(), host_arch().to_string(), None),
        [one] => ("linux".to_string(), one.to_string(), None),
        [os, arch] => (os.to_string(), arch.to_string(), None),
        [os, arch, variant] => (os.to_string(), arch.to_string(), Some(variant.to_string())),
        _ => return Err(bad("unknown operating system or architecture")),
    };
    if !OSES.contains(&os.as_str()) {
        return Err(bad("unknown operating system"));
    }
    let (arch, variant) = match (arch.as_str(), variant) {
        ("x86_64" | "x86-64", v) => ("amd64".to_string(), v),
        ("aarch64", v) => ("arm64".to_string(), v),
        ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
        ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
        ("i386", v) => ("386".to_string(), v),
        (a, v) => (a.to_string(), v),
    };
    let mut platform = Platform::default();
    platform.set_os(Os::from(os.as_str()));
    platform.set_architecture(Arch::from(arch.as_str()));
    platform.set_variant(variant);
    Ok(platform)
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The host's platform (containerd's `platforms.DefaultSpec`).
pub fn host() -> Platform {
    let mut platform = Platform::default();
    platform.set_os(Os::from(std::env::consts::OS));
    platform.set_architecture(Arch::from(host_arch()));
    platform
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_like_containerds() {
        let p = parse("linux/arm64/v8").unwrap();
        assert_eq!(p.os().to_string(), "linux");
        assert_eq!(p.architecture().to_string(), "arm64");
        assert_eq!(p.variant().as_deref(), Some("v8"));
        let p = parse("linux/x86_64").unwrap();
        assert_eq!(p.architecture().to_string(), "amd64");
        let p = parse("armhf").unwrap();
        assert_eq!(p.os().to_string(), "linux");
        assert_eq!(p.variant().as_deref(), Some("v7"));
        assert!(parse("linux/amd64/v1/extra").is_err());
        assert!(parse("nope/amd64").is_err());
        assert!(parse("linux/$$").is_err());
    }
}
