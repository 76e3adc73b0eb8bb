//! A test image made here, without network: one layer holding Debian's static busybox as
//! `/bin/busybox` with links `sh`, `echo`, `sleep`, `cat`, `ls` (plus the usual empty top
//! directories), written as the tar `ctr images import` reads, in either of its layouts:
//!
//! - [`Layout::DockerSave`]: what `docker save` writes (`manifest.json` with `RepoTags`,
//!   `<id>/layer.tar` uncompressed, `<id>/VERSION`, `<id>/json`, `repositories`);
//! - [`Layout::Oci`]: an OCI image layout (`oci-layout`, `index.json` naming the image with
//!   `io.containerd.image.name`, `blobs/sha256/*`, the layer gzip-compressed).
//!
//! Everything is deterministic (times 0, owner root), so digests depend only on the busybox
//! binary. Use [`busybox_image`] for the tar path and the image name.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ctrd::content::Digest;

use super::require_tool;

/// The name both layouts give the image (docker-save's `busybox:latest`, normalised).
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";

/// The links next to `/bin/busybox`.
pub const APPLETS: [&str; 5] = ["sh", "echo", "sleep", "cat", "ls"];

/// Which archive layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    DockerSave,
    Oci,
}

/// A built image tar and the digests a test may check.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub tar: PathBuf,
    pub name: String,
    /// The manifest the image's target names in the OCI layout (for docker-save, ctr makes
    /// the manifest itself).
    pub manifest: Option<Digest>,
    pub config: Digest,
    /// The layer blob as stored in the archive (gzip for OCI, plain tar for docker-save).
    pub layer: Digest,
    /// The uncompressed layer: the snapshot's chain id, as the image has one layer.
    pub diff_id: Digest,
}

/// Go's name for this machine's architecture, as image configs spell it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).expect("short tar path");
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root").expect("short name");
    h.set_groupname("root").expect("short name");
    h
}

/// Appends a regular file.
pub fn add_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(path, tar::EntryType::Regular, mode, data.len() as u64);
    h.set_cksum();
    builder.append(&h, data).expect("append to tar in memory");
}

/// Appends a directory.
pub fn add_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(path, tar::EntryType::Directory, mode, 0);
    h.set_cksum();
    builder
        .append(&h, std::io::empty())
        .expect("append to tar in memory");
}

fn add_symlink(builder: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(path, tar::EntryType::Symlink, 0o777, 0);
    h.set_link_name(target).expect("short link");
    h.set_cksum();
    builder
        .append(&h, std::io::empty())
        .expect("append to tar in memory");
}

/// The busybox layer as an uncompressed tar.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read(require_tool("busybox"))
        .expect("read busybox (Debian's busybox-static; scripts/setup installs it)");
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["bin", "dev", "etc", "proc", "root", "sys"] {
        add_dir(&mut b, &format!("{dir}/"), 0o755);
    }
    add_dir(&mut b, "tmp/", 0o1777);
    add_file(&mut b, "bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        add_symlink(&mut b, &format!("bin/{applet}"), "busybox");
    }
    b.into_inner().expect("finish tar in memory")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// The image config for one layer with `diff_id`, running `/bin/sh` by default.
pub fn image_config(diff_ids: &[&Digest]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        concat!(
            "{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"created\":\"1970-01-01T00:00:00Z\",",
            "\"config\":{{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],",
            "\"Cmd\":[\"/bin/sh\"],\"WorkingDir\":\"/\"}},",
            "\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{ids}]}}}}"
        ),
        arch = go_arch(),
        ids = ids.join(",")
    )
    .into_bytes()
}

/// An image archive of `layers` (uncompressed layer tars, bottom first) named `name`,
/// written to `out` in `layout`.
pub fn write_image(out: &Path, name: &str, layers: &[Vec<u8>], layout: Layout) -> TestImage {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
    let config = image_config(&diff_ids.iter().collect::<Vec<_>>());
    let config_digest = Digest::of(&config);
    let mut b = tar::Builder::new(Vec::new());
    let (manifest_digest, layer_digest) = match layout {
        Layout::DockerSave => {
            let short = name
                .strip_prefix("docker.io/library/")
                .or_else(|| name.strip_prefix("docker.io/"))
                .unwrap_or(name);
            let (repo, tag) = short.rsplit_once(':').unwrap_or((short, "latest"));
            let mut layer_paths = Vec::new();
            let mut parent = String::new();
            for (layer, diff_id) in layers.iter().zip(&diff_ids) {
                // docker save names each layer directory by a v1 id; any stable hex will do.
                let id = Digest::of(format!("{parent}{diff_id}").as_bytes())
                    .hex()
                    .to_string();
                add_dir(&mut b, &format!("{id}/"), 0o755);
                add_file(&mut b, &format!("{id}/VERSION"), 0o644, b"1.0");
                let json = if parent.is_empty() {
                    format!("{{\"id\":\"{id}\"}}")
                } else {
                    format!("{{\"id\":\"{id}\",\"parent\":\"{parent}\"}}")
                };
                add_file(&mut b, &format!("{id}/json"), 0o644, json.as_bytes());
                add_file(&mut b, &format!("{id}/layer.tar"), 0o644, layer);
                layer_paths.push(format!("\"{id}/layer.tar\""));
                parent = id;
            }
            let config_name = format!("{}.json", config_digest.hex());
            add_file(&mut b, &config_name, 0o644, &config);
            let manifest = format!(
                "[{{\"Config\":\"{config_name}\",\"RepoTags\":[\"{repo}:{tag}\"],\"Layers\":[{}]}}]",
                layer_paths.join(",")
            );
            add_file(&mut b, "manifest.json", 0o644, manifest.as_bytes());
            let repositories = format!("{{\"{repo}\":{{\"{tag}\":\"{parent}\"}}}}");
            add_file(&mut b, "repositories", 0o644, repositories.as_bytes());
            // ctr makes the manifest itself; the layer is stored as it is.
            (None, diff_ids.last().cloned())
        }
        Layout::Oci => {
            add_file(
                &mut b,
                "oci-layout",
                0o644,
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            );
            add_dir(&mut b, "blobs/", 0o755);
            add_dir(&mut b, "blobs/sha256/", 0o755);
            let mut descs = Vec::new();
            let mut last = None;
            for layer in layers {
                let gz = gzip(layer);
                let d = Digest::of(&gz);
                add_file(&mut b, &format!("blobs/sha256/{}", d.hex()), 0o644, &gz);
                descs.push(format!(
                    "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{d}\",\"size\":{}}}",
                    gz.len()
                ));
                last = Some(d);
            }
            add_file(
                &mut b,
                &format!("blobs/sha256/{}", config_digest.hex()),
                0o644,
                &config,
            );
            let manifest = format!(
                concat!(
                    "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",",
                    "\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",",
                    "\"digest\":\"{cd}\",\"size\":{cs}}},\"layers\":[{layers}]}}"
                ),
                cd = config_digest,
                cs = config.len(),
                layers = descs.join(",")
            );
            let manifest_digest = Digest::of(manifest.as_bytes());
            add_file(
                &mut b,
                &format!("blobs/sha256/{}", manifest_digest.hex()),
                0o644,
                manifest.as_bytes(),
            );
            let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
            let index = format!(
                concat!(
                    "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",",
                    "\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",",
                    "\"digest\":\"{md}\",\"size\":{ms},",
                    "\"platform\":{{\"architecture\":\"{arch}\",\"os\":\"linux\"}},",
                    "\"annotations\":{{\"io.containerd.image.name\":\"{name}\",",
                    "\"org.opencontainers.image.ref.name\":\"{tag}\"}}}}]}}"
                ),
                md = manifest_digest,
                ms = manifest.len(),
                arch = go_arch(),
                name = name,
                tag = tag,
            );
            add_file(&mut b, "index.json", 0o644, index.as_bytes());
            (Some(manifest_digest), last)
        }
    };
    let data = b.into_inner().expect("finish tar in memory");
    std::fs::write(out, data).expect("write image tar");
    TestImage {
        tar: out.to_path_buf(),
        name: name.to_string(),
        manifest: manifest_digest,
        config: config_digest,
        layer: layer_digest.expect("an image has a layer"),
        diff_id: diff_ids.last().cloned().expect("an image has a layer"),
    }
}

/// The busybox test image in `layout`, written under `dir`; see the module documentation.
pub fn busybox_image(dir: &Path, layout: Layout) -> TestImage {
    let file = match layout {
        Layout::DockerSave => "busybox-docker.tar",
        Layout::Oci => "busybox-oci.tar",
    };
    write_image(&dir.join(file), BUSYBOX_IMAGE, &[busybox_layer()], layout)
}

/// Just the tar path and the image name, for tests that need no digests.
pub fn busybox_tar(dir: &Path, layout: Layout) -> (PathBuf, String) {
    let image = busybox_image(dir, layout);
    (image.tar, image.name)
}
