//! Images and containers end to end: Debian's `ctr` imports, checks, tags, labels, exports
//! and removes the busybox test image through the real binary; containers are made
//! from it; garbage collection keeps what the image needs and nothing else; bad requests
//! from the gRPC client are answered while the daemon keeps serving.

mod common;

use std::path::{Path, PathBuf};

use common::image::{busybox_image, Layout, TestImage, APPLETS, BUSYBOX_IMAGE};
use common::peer::Containerd;
use common::{Daemon, START_DEADLINE};
use ctrd::api::containers::{
    Container, ContainersClient, CreateContainerRequest, GetContainerRequest, Runtime,
    UpdateContainerRequest,
};
use ctrd::api::images::{CreateImageRequest, Image, ImagesClient, UpdateImageRequest};
use ctrd::api::types::Descriptor;
use ctrd::api::version::VersionClient;
use ctrd::api::{Any, Empty, FieldMask};
use grpcio::{CallOption, RpcStatusCode};

const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

fn opt(ns: &str) -> CallOption {
    let mut headers = grpcio::MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", ns)
        .expect("namespace header");
    CallOption::default()
        .headers(headers.build())
        .timeout(START_DEADLINE)
}

fn status_code<T>(result: Result<T, grpcio::Error>) -> (RpcStatusCode, String) {
    match result {
        Err(grpcio::Error::RpcFailure(status)) => (status.code(), status.message().to_string()),
        Err(other) => panic!("expected an RPC status, got {other}"),
        Ok(_) => panic!("expected an RPC error, got success"),
    }
}

/// `ctr` output that failed, with its stderr.
fn ctr_err(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.ctr(args);
    assert!(!out.status.success(), "ctr {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rows of a ctr table, without its header.
fn rows(table: &str) -> Vec<String> {
    table.lines().skip(1).map(str::to_string).collect()
}

fn content_dir(daemon: &Daemon) -> PathBuf {
    daemon
        .dir
        .join("root/io.containerd.content.v1.content/blobs/sha256")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs a collection and waits for it (a lease removed with `--sync`).
fn collect(daemon: &Daemon) {
    daemon.ctr_ok(&["leases", "create", "--id", "collect-now"]);
    daemon.ctr_ok(&["leases", "rm", "--sync", "collect-now"]);
}

/// Imports `image` with `extra` flags and checks ctr's report.
fn import(daemon: &Daemon, image: &TestImage, extra: &[&str]) {
    let tar = image.tar.to_string_lossy().into_owned();
    let mut args = vec!["images", "import"];
    args.extend_from_slice(extra);
    args.push(&tar);
    let out = daemon.ctr_ok(&args);
    assert!(
        out.contains(&format!("unpacking {}", image.name)) && out.trim_end().ends_with("done"),
        "import printed: {out}"
    );
}

/// `ctr images check` reports the image complete and unpacked.
fn assert_checked(daemon: &Daemon, snapshotter: &[&str]) {
    let mut args = vec!["images", "check"];
    args.extend_from_slice(snapshotter);
    let out = daemon.ctr_ok(&args);
    let row = rows(&out)
        .into_iter()
        .find(|r| r.starts_with(BUSYBOX_IMAGE))
        .unwrap_or_else(|| panic!("no busybox row in: {out}"));
    assert!(row.contains("complete ("), "{row}");
    assert!(row.trim_end().ends_with("true"), "not unpacked: {row}");
}

/// `ctr images mount` shows busybox's files; `unmount --rm` takes the mount and the
/// snapshot away again.
fn mount_and_unmount(daemon: &Daemon, snapshotter: &[&str]) {
    let target = daemon.dir.join("mnt");
    std::fs::create_dir_all(&target).expect("mkdir mnt");
    let target_s = target.to_string_lossy().into_owned();
    let mut args = vec!["images", "mount"];
    args.extend_from_slice(snapshotter);
    args.extend_from_slice(&[BUSYBOX_IMAGE, &target_s]);
    daemon.ctr_ok(&args);
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(mounted.contains(&target_s), "not mounted");
    assert!(target.join("bin/busybox").is_file());
    for applet in APPLETS {
        let link = std::fs::read_link(target.join("bin").join(applet)).expect("applet link");
        assert_eq!(link, Path::new("busybox"));
    }
    daemon.ctr_ok(&["images", "unmount", "--rm", &target_s]);
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounted.contains(&target_s), "still mounted");
    assert!(!target.join("bin").exists());
    assert!(rows(&daemon.ctr_ok(&["leases", "ls"])).is_empty());
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The snapshotter directory of `snapshotter` under the daemon's root.
fn snapshots_dir(daemon: &Daemon, snapshotter: &str) -> PathBuf {
    daemon.dir.join(&format!(
        "root/io.containerd.snapshotter.v1.{snapshotter}/snapshots"
    ))
}

/// The unpacked layer holds busybox and its links.
fn assert_busybox_files(root: &Path) {
    let busybox = std::fs::metadata(root.join("bin/busybox")).expect("bin/busybox");
    assert!(busybox.is_file() && busybox.len() > 100_000);
    for applet in APPLETS {
        let link = std::fs::read_link(root.join("bin").join(applet)).expect("applet link");
        assert_eq!(link, Path::new("busybox"));
    }
    assert!(root.join("tmp").is_dir());
}

#[test]
fn docker_save_import_with_the_default_snapshotter() {
    let daemon = Daemon::start("img-docker");
    let image = busybox_image(&daemon.dir.path, Layout::DockerSave);
    let _guard = MountGuard(daemon.dir.join("mnt"));
    import(&daemon, &image, &[]);
    assert_checked(&daemon, &[]);
    let dirs = entries(&snapshots_dir(&daemon, "overlayfs"));
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_busybox_files(
        &snapshots_dir(&daemon, "overlayfs")
            .join(&dirs[0])
            .join("fs"),
    );

    let listed = daemon.ctr_ok(&["images", "ls"]);
    assert_eq!(rows(&listed).len(), 1, "{listed}");
    assert!(listed.contains(BUSYBOX_IMAGE), "{listed}");
    assert!(listed.contains("application/vnd.docker.distribution.manifest.v2+json"));

    daemon.ctr_ok(&["images", "tag", BUSYBOX_IMAGE, "example.com/busybox:copy"]);
    daemon.ctr_ok(&["images", "label", "example.com/busybox:copy", "team=edge"]);
    let filtered = daemon.ctr_ok(&["images", "ls", "labels.team==edge"]);
    let names: Vec<String> = rows(&filtered)
        .iter()
        .map(|r| r.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["example.com/busybox:copy"]);
    let err = ctr_err(
        &daemon,
        &["images", "tag", BUSYBOX_IMAGE, "example.com/busybox:copy"],
    );
    assert!(err.contains("already exists"), "{err}");

    mount_and_unmount(&daemon, &[]);

    // The export imports into containerd 1.6 itself.
    let exported = daemon.dir.join("export.tar");
    let exported_s = exported.to_string_lossy().into_owned();
    daemon.ctr_ok(&["images", "export", &exported_s, BUSYBOX_IMAGE]);
    let peer = Containerd::start("img-peer");
    let out = peer.ctr_ok(&["images", "import", &exported_s]);
    assert!(out.contains("unpacking") && out.contains("done"), "{out}");
    let checked = peer.ctr_ok(&["images", "check"]);
    assert!(checked.contains("complete"), "{checked}");

    daemon.ctr_ok(&["images", "rm", "example.com/busybox:copy"]);
    // ctr only warns about an image that is not there.
    let out = daemon.ctr(&["images", "rm", "example.com/busybox:copy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(daemon.ctr_ok(&["images", "ls", "-q"]).trim(), BUSYBOX_IMAGE);
}

#[test]
fn oci_layout_import_with_the_default_snapshotter() {
    let daemon = Daemon::start("img-oci");
    let image = busybox_image(&daemon.dir.path, Layout::Oci);
    let _guard = MountGuard(daemon.dir.join("mnt"));
    import(&daemon, &image, &[]);
    assert_checked(&daemon, &[]);
    let listed = daemon.ctr_ok(&["images", "ls"]);
    let manifest = image.manifest.as_ref().expect("OCI layout has a manifest");
    assert!(listed.contains(&manifest.to_string()), "{listed}");
    mount_and_unmount(&daemon, &[]);
}

#[test]
fn both_layouts_import_with_the_native_snapshotter() {
    let native = ["--snapshotter", "native"];
    for layout in [Layout::DockerSave, Layout::Oci] {
        let daemon = Daemon::start("img-native");
        let image = busybox_image(&daemon.dir.path, layout);
        import(&daemon, &image, &native);
        assert_checked(&daemon, &native);
        let dirs = entries(&snapshots_dir(&daemon, "native"));
        assert_eq!(dirs.len(), 1, "{layout:?}: {dirs:?}");
        assert_busybox_files(&snapshots_dir(&daemon, "native").join(&dirs[0]));
        // The other snapshotter was not touched.
        assert!(entries(&snapshots_dir(&daemon, "overlayfs")).is_empty());
    }
}

/// After an import through `snapshotter`, a collection keeps everything the image needs and
/// takes what nothing references; `images rm --sync` then leaves nothing on disk.
fn gc_flow(name: &str, snapshotter: &str) {
    let daemon = Daemon::start(name);
    let image = busybox_image(&daemon.dir.path, Layout::DockerSave);
    let flags = ["--snapshotter", snapshotter];
    import(&daemon, &image, &flags);
    assert!(rows(&daemon.ctr_ok(&["leases", "ls"])).is_empty());

    // The tar's other members (VERSION, json, repositories, manifest.json) and the index ctr
    // made are referenced by nothing: one collection takes them; the image's own stay.
    collect(&daemon);
    assert_checked(&daemon, &flags);
    let blobs = entries(&content_dir(&daemon));
    assert_eq!(blobs.len(), 3, "manifest, config, layer: {blobs:?}");
    assert!(blobs.contains(&image.config.hex().to_string()), "{blobs:?}");
    assert!(blobs.contains(&image.layer.hex().to_string()), "{blobs:?}");
    let dir = snapshots_dir(&daemon, snapshotter);
    assert_eq!(entries(&dir).len(), 1, "one layer, one snapshot");
    let snapshots = daemon.ctr_ok(&["snapshots", "--snapshotter", snapshotter, "ls"]);
    assert!(
        snapshots.contains(&image.diff_id.to_string()),
        "{snapshots}"
    );

    daemon.ctr_ok(&["images", "rm", "--sync", BUSYBOX_IMAGE]);
    assert_eq!(entries(&content_dir(&daemon)), Vec::<String>::new());
    assert_eq!(entries(&dir), Vec::<String>::new());
    assert!(rows(&daemon.ctr_ok(&["content", "ls"])).is_empty());
    let snapshots = daemon.ctr_ok(&["snapshots", "--snapshotter", snapshotter, "ls"]);
    assert!(rows(&snapshots).is_empty(), "{snapshots}");
}

#[test]
fn gc_keeps_what_the_image_needs_and_sync_rm_removes_the_rest_overlayfs() {
    gc_flow("img-gc-overlay", "overlayfs");
}

#[test]
fn gc_keeps_what_the_image_needs_and_sync_rm_removes_the_rest_native() {
    gc_flow("img-gc-native", "native");
}

#[test]
fn containers_from_the_image_and_namespace_removal() {
    let daemon = Daemon::start("img-ctr");
    let image = busybox_image(&daemon.dir.path, Layout::Oci);
    import(&daemon, &image, &[]);

    daemon.ctr_ok(&["containers", "create", BUSYBOX_IMAGE, "c1"]);
    let listed = daemon.ctr_ok(&["containers", "ls"]);
    assert_eq!(rows(&listed).len(), 1, "{listed}");
    assert!(
        listed.contains("c1") && listed.contains("io.containerd.runc.v2"),
        "{listed}"
    );

    let info = daemon.ctr_ok(&["containers", "info", "c1"]);
    assert!(info.contains("\"ociVersion\""), "spec as JSON: {info}");
    assert!(info.contains("\"SnapshotKey\": \"c1\""), "{info}");
    assert!(info.contains("\"Snapshotter\": \"overlayfs\""), "{info}");

    daemon.ctr_ok(&["containers", "label", "c1", "role=test"]);
    let info = daemon.ctr_ok(&["containers", "info", "c1"]);
    assert!(info.contains("\"role\": \"test\""), "{info}");
    let filtered = daemon.ctr_ok(&["containers", "ls", "labels.role==test"]);
    assert_eq!(rows(&filtered).len(), 1, "{filtered}");

    let err = ctr_err(&daemon, &["containers", "create", BUSYBOX_IMAGE, "c1"]);
    assert!(err.contains("already exists"), "{err}");
    let err = ctr_err(&daemon, &["containers", "create", BUSYBOX_IMAGE, "bad_-id"]);
    assert!(
        err.contains("container.ID: identifier \"bad_-id\" must match")
            && err.contains("invalid argument"),
        "{err}"
    );

    let err = ctr_err(&daemon, &["namespaces", "rm", "default"]);
    assert!(
        err.contains(
            "namespace \"default\" must be empty, but it still has images, blobs, containers"
        ),
        "{err}"
    );

    daemon.ctr_ok(&["containers", "rm", "c1"]);
    assert!(rows(&daemon.ctr_ok(&["containers", "ls"])).is_empty());
    let err = ctr_err(&daemon, &["containers", "rm", "c1"]);
    assert!(err.contains("not found"), "{err}");
    // The container's snapshot is gone with it (ctr removes it), the one prepared for the
    // refused container goes at the next collection; the image's chain stays.
    collect(&daemon);
    let snapshots = daemon.ctr_ok(&["snapshots", "ls"]);
    assert_eq!(rows(&snapshots).len(), 1, "{snapshots}");

    daemon.ctr_ok(&["images", "rm", "--sync", BUSYBOX_IMAGE]);
    daemon.ctr_ok(&["namespaces", "rm", "default"]);
    assert!(rows(&daemon.ctr_ok(&["namespaces", "ls"])).is_empty());
}

fn spec() -> Any {
    Any {
        type_url: SPEC_TYPE.into(),
        value: br#"{"ociVersion":"1.0.2-dev"}"#.to_vec(),
        ..Default::default()
    }
}

fn container(id: &str) -> Container {
    Container {
        id: id.into(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".into(),
            ..Default::default()
        })
        .into(),
        spec: Some(spec()).into(),
        ..Default::default()
    }
}

/// A request the generated types cannot express: `Container.spec` holding bytes that do not
/// decode as an `Any`.
fn malformed_create(client: &grpcio::Client, option: CallOption) -> grpcio::Result<Vec<u8>> {
    // grpcio's Marshaller wants exactly `fn(&T, …)` with T = Vec<u8>.
    #[allow(clippy::ptr_arg)]
    fn ser(msg: &Vec<u8>, buf: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
        *buf = grpcio::GrpcSlice::from(msg.clone());
        Ok(())
    }
    fn de(mut reader: grpcio::MessageReader) -> grpcio::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
        Ok(out)
    }
    const METHOD: grpcio::Method<Vec<u8>, Vec<u8>> = grpcio::Method {
        ty: grpcio::MethodType::Unary,
        name: "/containerd.services.containers.v1.Containers/Create",
        req_mar: grpcio::Marshaller { ser, de },
        resp_mar: grpcio::Marshaller { ser, de },
    };
    // CreateContainerRequest{container(1): Container{id(1): "x", spec(5): <0xff 0xff>}}
    let inner = [0x0a, 0x01, b'x', 0x2a, 0x02, 0xff, 0xff];
    let mut msg = vec![0x0a, inner.len() as u8];
    msg.extend_from_slice(&inner);
    client.unary_call(&METHOD, &msg, option)
}

#[test]
fn bad_requests_are_answered_while_serving() {
    let daemon = Daemon::start("img-bad");
    let images = ImagesClient::new(daemon.channel());
    let containers = ContainersClient::new(daemon.channel());
    let version = VersionClient::new(daemon.channel());

    let no_target = CreateImageRequest {
        image: Some(Image {
            name: "x".into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let (code, msg) = status_code(images.create_opt(&no_target, opt("default")));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(
        msg,
        "Target.Digest \"\" invalid: invalid checksum digest format: invalid argument"
    );

    let good = Image {
        name: "x".into(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 10,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    images
        .create_opt(
            &CreateImageRequest {
                image: Some(good.clone()).into(),
                ..Default::default()
            },
            opt("default"),
        )
        .expect("create image");
    let bad_mask = UpdateImageRequest {
        image: Some(good).into(),
        update_mask: Some(FieldMask {
            paths: vec!["target.size".into()],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let (code, msg) = status_code(images.update_opt(&bad_mask, opt("default")));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(
        msg,
        "cannot update \"target.size\" field on image \"x\": invalid argument"
    );

    let mut no_runtime = container("c1");
    no_runtime.runtime = None.into();
    let req = CreateContainerRequest {
        container: Some(no_runtime).into(),
        ..Default::default()
    };
    let (code, msg) = status_code(containers.create_opt(&req, opt("default")));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(
        msg,
        "create container failed validation: container.Runtime.Name must be set: invalid argument"
    );
    let mut no_spec = container("c1");
    no_spec.spec = None.into();
    let req = CreateContainerRequest {
        container: Some(no_spec).into(),
        ..Default::default()
    };
    let (code, msg) = status_code(containers.create_opt(&req, opt("default")));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(msg.contains("container.Spec must be set"), "{msg}");

    let raw = grpcio::Client::new(daemon.channel());
    let (code, _) = status_code(malformed_create(&raw, opt("default")));
    assert_ne!(code, RpcStatusCode::OK);

    let mut mask_bad = container("c2");
    containers
        .create_opt(
            &CreateContainerRequest {
                container: Some(mask_bad.clone()).into(),
                ..Default::default()
            },
            opt("default"),
        )
        .expect("create container");
    mask_bad.image = "y".into();
    let req = UpdateContainerRequest {
        container: Some(mask_bad).into(),
        update_mask: Some(FieldMask {
            paths: vec!["runtime.name".into()],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let (code, msg) = status_code(containers.update_opt(&req, opt("default")));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(
        msg,
        "cannot update \"runtime.name\" field on \"c2\": invalid argument"
    );
    let got = containers
        .get_opt(
            &GetContainerRequest {
                id: "c2".into(),
                ..Default::default()
            },
            opt("default"),
        )
        .expect("get container");
    assert_eq!(got.container.spec.as_ref().expect("spec"), &spec());
    assert_eq!(got.container.image, "");

    // Still serving.
    version
        .version_opt(&Empty::default(), opt("default"))
        .expect("version after bad requests");
}
