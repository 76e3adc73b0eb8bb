//! Code generation into OUT_DIR (nothing generated is ever committed):
//! - protobuf messages for every file in [`PROTOS`], with protobuf-codegen's pure parser
//!   (no `protoc` binary), one directory per protobuf package;
//! - gRPC glue for every service of a [`Serve::Grpc`] file: method descriptors, a synchronous
//!   service trait, a `create_<service>` function and a client, written here from the parsed
//!   descriptors (grpcio-compiler only understands rust-protobuf 2);
//! - ttrpc stubs (sync server and client) for every service of a [`Serve::Ttrpc`] file;
//! - `api/index.rs`: one Rust module per protobuf package (`containerd.services.content.v1`
//!   is `containerd::services::content::v1`), holding a module per file (by file stem), the
//!   glue modules `<service>_grpc` and `<stem>_ttrpc`, and private aliases of the files it
//!   imports from other packages (generated code names them as `super::<stem>`);
//! - `CTRD_REVISION` from git, when the source is a git checkout;
//! - `src/grpc_core.cc`, compiled with the cc crate against grpcio-sys's copy of gRPC core
//!   and abseil (found with `cargo metadata`): the process-wide start of gRPC core with only
//!   the threads ctrd uses (see that file).
//!
//! Adding a proto file: put it under `proto/` at its containerd import path, add it to
//! [`PROTOS`], and re-export what the code uses from `src/api` (one module per package).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use protobuf::descriptor::{FileDescriptorProto, MethodDescriptorProto};

/// How the services of a proto file are served or called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// gRPC glue (also right for files without services).
    Grpc,
    /// ttrpc stubs.
    Ttrpc,
}

/// Every proto file ctrd compiles, by its path under `proto/` (its import path).
const PROTOS: &[(&str, Serve)] = &[
    ("containerd/events/content_events.proto", Serve::Grpc),
    ("containerd/events/namespace_events.proto", Serve::Grpc),
    ("containerd/events/object_events.proto", Serve::Grpc),
    ("containerd/events/task_events.proto", Serve::Grpc),
    (
        "containerd/services/containers/v1/containers.proto",
        Serve::Grpc,
    ),
    ("containerd/runtime/v2/runc/options/oci.proto", Serve::Grpc),
    ("containerd/runtime/v2/task/shim.proto", Serve::Ttrpc),
    ("containerd/services/content/v1/content.proto", Serve::Grpc),
    ("containerd/services/diff/v1/diff.proto", Serve::Grpc),
    (
        "containerd/services/events/ttrpc/v1/ttrpc_events.proto",
        Serve::Ttrpc,
    ),
    ("containerd/services/events/v1/events.proto", Serve::Grpc),
    (
        "containerd/services/introspection/v1/introspection.proto",
        Serve::Grpc,
    ),
    ("containerd/services/images/v1/images.proto", Serve::Grpc),
    ("containerd/services/leases/v1/leases.proto", Serve::Grpc),
    (
        "containerd/services/namespaces/v1/namespace.proto",
        Serve::Grpc,
    ),
    (
        "containerd/services/snapshots/v1/snapshots.proto",
        Serve::Grpc,
    ),
    ("containerd/services/tasks/v1/tasks.proto", Serve::Grpc),
    ("containerd/services/version/v1/version.proto", Serve::Grpc),
    ("containerd/types/descriptor.proto", Serve::Grpc),
    ("containerd/types/event.proto", Serve::Grpc),
    ("containerd/types/metrics.proto", Serve::Grpc),
    ("containerd/types/mount.proto", Serve::Grpc),
    ("containerd/types/platform.proto", Serve::Grpc),
    ("containerd/types/task/task.proto", Serve::Grpc),
    ("google/rpc/status.proto", Serve::Grpc),
    ("grpc/health/v1/health.proto", Serve::Grpc),
    ("perftools/profiles/profile.proto", Serve::Grpc),
];

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

fn main() {
    println!("cargo:rerun-if-changed=proto");
    grpc_core_start();
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Not `protos/`, which older revisions of this script clear: trees sharing a build
    // directory must not remove each other's output.
    let protos = out_dir.join("api");
    check_list(Path::new("proto"));
    let inputs: Vec<PathBuf> = PROTOS
        .iter()
        .map(|(path, _)| Path::new("proto").join(path))
        .collect();

    let parsed = protobuf_parse::Parser::new()
        .pure()
        .include("proto")
        .inputs(&inputs)
        .parse_and_typecheck()
        .expect("proto files parse");
    let files: BTreeMap<String, &FileDescriptorProto> = parsed
        .file_descriptors
        .iter()
        .map(|f| (f.name().to_string(), f))
        .collect();

    // One package module per protobuf package: the files in it, and what they import.
    let mut packages: BTreeMap<String, Package> = BTreeMap::new();
    for (name, serve) in PROTOS {
        let file = files
            .get(*name)
            .unwrap_or_else(|| panic!("{name}: not parsed"));
        let package = packages.entry(file.package().to_string()).or_default();
        package.files.push((name.to_string(), *serve));
    }
    let types = type_paths(&parsed.file_descriptors);
    for (package, contents) in &mut packages {
        let dir = protos.join(package.replace('.', "/"));
        std::fs::create_dir_all(&dir).expect("create package dir");
        let own: Vec<PathBuf> = contents
            .files
            .iter()
            .map(|(name, _)| Path::new("proto").join(name))
            .collect();
        protobuf_codegen::Codegen::new()
            .pure()
            .include("proto")
            .inputs(&own)
            .out_dir(&dir)
            .customize(protobuf_codegen::Customize::default().gen_mod_rs(false))
            .run_from_script();
        let ttrpc: Vec<PathBuf> = contents
            .files
            .iter()
            .filter(|(_, serve)| *serve == Serve::Ttrpc)
            .map(|(name, _)| Path::new("proto").join(name))
            .collect();
        if !ttrpc.is_empty() {
            ttrpc_codegen::Codegen::new()
                .out_dir(&dir)
                .include("proto")
                .inputs(&ttrpc)
                .run()
                .expect("ttrpc code generation");
        }
        for (name, serve) in contents.files.clone() {
            let file = files[&name];
            let own = stem(&name);
            contents.add(package, &own, dir.join(format!("{own}.rs")), None);
            if serve == Serve::Ttrpc {
                let module = format!("{own}_ttrpc");
                contents.add(package, &module, dir.join(format!("{module}.rs")), None);
            }
            if serve == Serve::Grpc {
                for service in &file.service {
                    let module = format!("{}_grpc", snake(service.name()));
                    let path = dir.join(format!("{module}.rs"));
                    std::fs::write(&path, service_glue(file, service, &types))
                        .expect("write grpc glue");
                    contents.add(package, &module, path, None);
                }
            }
            for import in &file.dependency {
                if import.starts_with("google/protobuf/") {
                    continue; // protobuf's well-known types, named by their crate path
                }
                let imported = files
                    .get(import.as_str())
                    .unwrap_or_else(|| panic!("{name} imports {import}, which is not in PROTOS"));
                if imported.package() != package {
                    let target = format!("{}::{}", module_path(imported.package()), stem(import));
                    contents.add(package, &stem(import), PathBuf::new(), Some(target));
                }
            }
        }
    }
    write_index(&protos.join("index.rs"), &packages);
    revision();
}

/// What one package module holds: its files, and its items by name.
#[derive(Default)]
struct Package {
    files: Vec<(String, Serve)>,
    /// name -> a generated file, or an alias of another package's file module.
    items: BTreeMap<String, Item>,
}

#[derive(PartialEq)]
enum Item {
    File(PathBuf),
    Alias(String),
}

impl Package {
    fn add(&mut self, package: &str, name: &str, path: PathBuf, alias: Option<String>) {
        let item = match alias {
            Some(target) => Item::Alias(target),
            None => Item::File(path),
        };
        if let Some(existing) = self.items.get(name) {
            if *existing == item {
                return;
            }
            panic!(
                "package {package}: two things would be the module `{name}` (a proto file \
                 stem, an imported file's stem or a service glue module); rename one proto file"
            );
        }
        self.items.insert(name.to_string(), item);
    }
}

/// The Rust path of a package module under `crate::api::generated`.
fn module_path(package: &str) -> String {
    format!("crate::api::generated::{}", package.replace('.', "::"))
}

fn stem(proto: &str) -> String {
    Path::new(proto)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("proto file name")
        .to_string()
}

fn plain_identifier(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.is_empty()
        && !KEYWORDS.contains(&name)
        && name != "mod"
}

/// Every `.proto` under `proto/` is listed and every listed one exists; file stems and
/// package segments are plain Rust identifiers.
fn check_list(dir: &Path) {
    let listed: BTreeMap<PathBuf, ()> = PROTOS
        .iter()
        .map(|(path, _)| (dir.join(path), ()))
        .collect();
    for path in proto_files(dir) {
        assert!(
            listed.contains_key(&path),
            "{}: not in build.rs PROTOS; add it there",
            path.display()
        );
    }
    for (path, _) in PROTOS {
        assert!(
            dir.join(path).is_file(),
            "PROTOS lists {path}, which does not exist"
        );
        let stem = stem(path);
        assert!(
            plain_identifier(&stem) && !stem.ends_with("_ttrpc") && !stem.ends_with("_grpc"),
            "{path}: a proto file name must be a plain lower-case Rust identifier \
             (not ending in _ttrpc or _grpc)"
        );
    }
}

/// The index of the package modules: nested `pub mod`s, one file module per proto file.
fn write_index(path: &Path, packages: &BTreeMap<String, Package>) {
    #[derive(Default)]
    struct Node<'a> {
        children: BTreeMap<String, Node<'a>>,
        package: Option<(&'a str, &'a Package)>,
    }
    fn emit(node: &Node, depth: usize, out: &mut String) {
        let pad = "    ".repeat(depth);
        if let Some((package, contents)) = node.package {
            let _ = writeln!(out, "{pad}//! `{package}`");
            for (name, item) in &contents.items {
                assert!(
                    !node.children.contains_key(name),
                    "package {package}: `{name}` is both a file module and a package segment"
                );
                match item {
                    Item::File(file) => {
                        let _ = writeln!(
                            out,
                            "{pad}#[path = {:?}]\n{pad}pub mod {name};",
                            file.display().to_string()
                        );
                    }
                    Item::Alias(target) => {
                        let _ = writeln!(out, "{pad}#[allow(unused_imports)]\n{pad}use {target};");
                    }
                }
            }
        }
        for (segment, child) in &node.children {
            let _ = writeln!(out, "{pad}pub mod {segment} {{");
            emit(child, depth + 1, out);
            let _ = writeln!(out, "{pad}}}");
        }
    }
    let mut root = Node::default();
    for (package, contents) in packages {
        let mut node = &mut root;
        for segment in package.split('.') {
            assert!(
                plain_identifier(segment),
                "package {package}: segment {segment:?} is not a plain Rust identifier"
            );
            node = node.children.entry(segment.to_string()).or_default();
        }
        node.package = Some((package, contents));
    }
    let mut out = String::from("// Generated by build.rs: one module per protobuf package.\n");
    emit(&root, 0, &mut out);
    std::fs::write(path, out).expect("write module index");
}

fn proto_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read proto dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Maps `.package.Message` to the Rust path of its generated type.
fn type_paths(files: &[FileDescriptorProto]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (name, module) in [
        ("Empty", "empty"),
        ("Any", "any"),
        ("Timestamp", "timestamp"),
        ("FieldMask", "field_mask"),
        ("Duration", "duration"),
    ] {
        map.insert(
            format!(".google.protobuf.{name}"),
            format!("::protobuf::well_known_types::{module}::{name}"),
        );
    }
    for file in files.iter().filter(|f| f.package() != "google.protobuf") {
        let module = format!("{}::{}", module_path(file.package()), stem(file.name()));
        for message in &file.message_type {
            map.insert(
                format!(".{}.{}", file.package(), message.name()),
                format!("{module}::{}", message.name()),
            );
        }
    }
    map
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unary methods answered through `crate::rpc::Reply` (now or later, from any thread)
/// instead of a return value: calls that wait for an outside event, such as a task's exit,
/// without holding a thread meanwhile. Full names, `package.Service/Method`.
const DEFERRED: &[&str] = &[];

enum Kind {
    Unary,
    ClientStream,
    ServerStream,
    Duplex,
}

fn kind(method: &MethodDescriptorProto) -> Kind {
    match (method.client_streaming(), method.server_streaming()) {
        (false, false) => Kind::Unary,
        (true, false) => Kind::ClientStream,
        (false, true) => Kind::ServerStream,
        (true, true) => Kind::Duplex,
    }
}

fn deferred(service: &str, method: &MethodDescriptorProto) -> bool {
    DEFERRED.contains(&format!("{service}/{}", method.name()).as_str())
}

fn service_glue(
    file: &FileDescriptorProto,
    service: &protobuf::descriptor::ServiceDescriptorProto,
    types: &BTreeMap<String, String>,
) -> String {
    let svc = service.name();
    let full = format!("{}.{}", file.package(), svc);
    let ty = |name: &str| {
        types
            .get(name)
            .unwrap_or_else(|| panic!("no Rust type for {name}"))
            .clone()
    };
    let mut out = String::new();
    let _ = writeln!(out, "//! gRPC glue for `{full}`, generated by build.rs.");
    let _ = writeln!(
        out,
        "#![allow(dead_code, clippy::all, unused_qualifications)]"
    );

    // Method descriptors.
    for m in &service.method {
        let (req, resp) = (ty(m.input_type()), ty(m.output_type()));
        let method_type = match kind(m) {
            Kind::Unary => "Unary",
            Kind::ClientStream => "ClientStreaming",
            Kind::ServerStream => "ServerStreaming",
            Kind::Duplex => "Duplex",
        };
        let _ = writeln!(
            out,
            "    pub const METHOD_{}_{}: ::grpcio::Method<{req}, {resp}> = ::grpcio::Method {{\n        ty: ::grpcio::MethodType::{method_type},\n        name: \"/{full}/{}\",\n        req_mar: ::grpcio::Marshaller {{ ser: ::grpcio::pb_ser, de: ::grpcio::pb_de }},\n        resp_mar: ::grpcio::Marshaller {{ ser: ::grpcio::pb_ser, de: ::grpcio::pb_de }},\n    }};",
            snake(svc).to_uppercase(),
            snake(m.name()).to_uppercase(),
            m.name()
        );
    }

    // The synchronous service trait.
    let _ = writeln!(out, "    pub trait {svc}: Send + Sync + 'static {{");
    for m in &service.method {
        let (req, resp) = (ty(m.input_type()), ty(m.output_type()));
        let name = snake(m.name());
        let unimpl = format!("Err(crate::rpc::unimplemented(\"{}\"))", m.name());
        if deferred(&full, m) {
            let _ = writeln!(
                out,
                "        #[allow(unused_variables)]\n        fn {name}(&self, req: {req}, reply: crate::rpc::Reply<{resp}>) {{ reply.finish({unimpl}) }}"
            );
            continue;
        }
        let sig = match kind(m) {
            Kind::Unary => format!("fn {name}(&self, call: &crate::rpc::Call, req: {req}) -> crate::rpc::RpcResult<{resp}>"),
            Kind::ServerStream => format!("fn {name}(&self, call: &crate::rpc::Call, req: {req}, out: &mut crate::rpc::StreamSender<{resp}>) -> crate::rpc::RpcResult<()>"),
            Kind::ClientStream => format!("fn {name}(&self, call: &crate::rpc::Call, input: &mut crate::rpc::StreamReceiver<{req}>) -> crate::rpc::RpcResult<{resp}>"),
            Kind::Duplex => format!("fn {name}(&self, call: &crate::rpc::Call, input: &mut crate::rpc::StreamReceiver<{req}>, out: &mut crate::rpc::StreamSender<{resp}>) -> crate::rpc::RpcResult<()>"),
        };
        let _ = writeln!(
            out,
            "        #[allow(unused_variables)]\n        {sig} {{ {unimpl} }}"
        );
    }
    let _ = writeln!(out, "    }}");

    // Registration of every method.
    let _ = writeln!(
        out,
        "    pub fn create_{}(s: ::std::sync::Arc<dyn {svc}>) -> ::grpcio::Service {{\n        let mut builder = ::grpcio::ServiceBuilder::new();",
        snake(svc)
    );
    for m in &service.method {
        let name = snake(m.name());
        let konst = format!(
            "METHOD_{}_{}",
            snake(svc).to_uppercase(),
            name.to_uppercase()
        );
        let (add, runner, args, call) = match kind(m) {
            Kind::Unary => (
                "add_unary_handler",
                "unary",
                "ctx, req, sink",
                "move |call, req| s.{name}(call, req)",
            ),
            Kind::ServerStream => (
                "add_server_streaming_handler",
                "server_streaming",
                "ctx, req, sink",
                "move |call, req, out| s.{name}(call, req, out)",
            ),
            Kind::ClientStream => (
                "add_client_streaming_handler",
                "client_streaming",
                "ctx, stream, sink",
                "move |call, input| s.{name}(call, input)",
            ),
            Kind::Duplex => (
                "add_duplex_streaming_handler",
                "duplex_streaming",
                "ctx, stream, sink",
                "move |call, input, out| s.{name}(call, input, out)",
            ),
        };
        let (runner, call) = if deferred(&full, m) {
            ("unary_deferred", "move |req, reply| s.{name}(req, reply)")
        } else {
            (runner, call)
        };
        let call = call.replace("{name}", &name);
        let _ = writeln!(
            out,
            "        {{\n            let s = s.clone();\n            builder = builder.{add}(&{konst}, move |{args}| {{\n                let s = s.clone();\n                crate::rpc::{runner}({args}, \"{full}\", \"{}\", {call})\n            }});\n        }}",
            m.name()
        );
    }
    let _ = writeln!(out, "        let _ = s;\n        builder.build()\n    }}");

    // The client.
    let _ = writeln!(
        out,
        "    #[derive(Clone)]\n    pub struct {svc}Client {{ client: ::grpcio::Client }}\n    impl {svc}Client {{\n        pub fn new(channel: ::grpcio::Channel) -> Self {{ {svc}Client {{ client: ::grpcio::Client::new(channel) }} }}"
    );
    for m in &service.method {
        let (req, resp) = (ty(m.input_type()), ty(m.output_type()));
        let name = snake(m.name());
        let konst = format!(
            "METHOD_{}_{}",
            snake(svc).to_uppercase(),
            name.to_uppercase()
        );
        let text = match kind(m) {
            Kind::Unary => format!(
                "        pub fn {name}_opt(&self, req: &{req}, opt: ::grpcio::CallOption) -> ::grpcio::Result<{resp}> {{ self.client.unary_call(&{konst}, req, opt) }}\n        pub fn {name}(&self, req: &{req}) -> ::grpcio::Result<{resp}> {{ self.{name}_opt(req, ::grpcio::CallOption::default()) }}"
            ),
            Kind::ServerStream => format!(
                "        pub fn {name}_opt(&self, req: &{req}, opt: ::grpcio::CallOption) -> ::grpcio::Result<::grpcio::ClientSStreamReceiver<{resp}>> {{ self.client.server_streaming(&{konst}, req, opt) }}\n        pub fn {name}(&self, req: &{req}) -> ::grpcio::Result<::grpcio::ClientSStreamReceiver<{resp}>> {{ self.{name}_opt(req, ::grpcio::CallOption::default()) }}"
            ),
            Kind::ClientStream => format!(
                "        pub fn {name}_opt(&self, opt: ::grpcio::CallOption) -> ::grpcio::Result<(::grpcio::ClientCStreamSender<{req}>, ::grpcio::ClientCStreamReceiver<{resp}>)> {{ self.client.client_streaming(&{konst}, opt) }}\n        pub fn {name}(&self) -> ::grpcio::Result<(::grpcio::ClientCStreamSender<{req}>, ::grpcio::ClientCStreamReceiver<{resp}>)> {{ self.{name}_opt(::grpcio::CallOption::default()) }}"
            ),
            Kind::Duplex => format!(
                "        pub fn {name}_opt(&self, opt: ::grpcio::CallOption) -> ::grpcio::Result<(::grpcio::ClientDuplexSender<{req}>, ::grpcio::ClientDuplexReceiver<{resp}>)> {{ self.client.duplex_streaming(&{konst}, opt) }}\n        pub fn {name}(&self) -> ::grpcio::Result<(::grpcio::ClientDuplexSender<{req}>, ::grpcio::ClientDuplexReceiver<{resp}>)> {{ self.{name}_opt(::grpcio::CallOption::default()) }}"
            ),
        };
        let _ = writeln!(out, "{text}");
    }
    let _ = writeln!(out, "    }}");
    out
}

/// Rebuild when `path` changes. A path that does not exist is not watched: cargo would
/// treat it as changed on every build (a fresh repository has no `packed-refs`).
fn watch(path: &str) {
    if std::path::Path::new(path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn revision() {
    if let Ok(rev) = std::env::var("CTRD_REVISION") {
        println!("cargo:rustc-env=CTRD_REVISION={rev}");
        return;
    }
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    if let Ok(out) = head {
        if out.status.success() {
            let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("cargo:rustc-env=CTRD_REVISION={rev}");
            // Rebuild when HEAD moves: HEAD itself, and the branch it points to.
            for args in [
                &["rev-parse", "--git-path", "HEAD"][..],
                &["rev-parse", "--git-path", "packed-refs"][..],
            ] {
                if let Ok(out) = std::process::Command::new("git").args(args).output() {
                    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    watch(&path);
                }
            }
            if let Ok(out) = std::process::Command::new("git")
                .args(["symbolic-ref", "-q", "HEAD"])
                .output()
            {
                let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !name.is_empty() {
                    if let Ok(path) = std::process::Command::new("git")
                        .args(["rev-parse", "--git-path", &name])
                        .output()
                    {
                        let path = String::from_utf8_lossy(&path.stdout).trim().to_string();
                        watch(&path);
                    }
                }
            }
        }
    }
}

/// Compiles `src/grpc_core.cc` into the crate. Its classes must match the gRPC core that
/// grpcio-sys links: same sources (grpcio-sys's own), the compiler's default language level
/// (which grpcio-sys's cmake build also uses on Linux) and `NDEBUG` exactly when cmake builds
/// gRPC core for release (every profile but dev, whose opt-level 0 makes it a Debug build).
fn grpc_core_start() {
    const SOURCE: &str = "src/grpc_core.cc";
    println!("cargo:rerun-if-changed={SOURCE}");
    // Another grpcio-sys (a new version in the lock file) means other headers.
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=GRPCIO_SYS_USE_PKG_CONFIG");
    assert!(
        std::env::var("GRPCIO_SYS_USE_PKG_CONFIG").as_deref() != Ok("1"),
        "GRPCIO_SYS_USE_PKG_CONFIG=1 links the system's gRPC core, but {SOURCE} is built \
         against grpcio-sys's own sources, which must match it: unset it"
    );
    let grpc = grpcio_sys_dir().join("grpc");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(SOURCE)
        .include(grpc.join("include"))
        .include(&grpc)
        .include(grpc.join("third_party/abseil-cpp"))
        // abseil's and gRPC's own headers warn under -Wall; this file is built warning-free.
        .warnings(false);
    if std::env::var("OPT_LEVEL").as_deref() != Ok("0") {
        build.define("NDEBUG", None);
    }
    build.compile("ctrd_grpc_core");
}

/// The directory of the grpcio-sys package this build uses: of the manifests `cargo
/// metadata` lists, the one whose package is named grpcio-sys (from the registry, a vendor
/// directory or a git checkout alike).
fn grpcio_sys_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").expect("cargo sets CARGO");
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let manifest =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("Cargo.toml");
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &target, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = String::from_utf8(output.stdout).expect("cargo metadata prints UTF-8");
    // Paths come as JSON strings; a path with escapes in it would not be found below, and
    // the build would stop saying so.
    let found = json
        .split("\"manifest_path\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|path| {
            std::fs::read_to_string(path).is_ok_and(|text| {
                text.lines()
                    .any(|line| line.replace(' ', "") == "name=\"grpcio-sys\"")
            })
        })
        .expect("cargo metadata lists grpcio-sys");
    let dir = Path::new(found)
        .parent()
        .expect("a manifest has a directory");
    assert!(
        dir.join("grpc/include/grpc/grpc.h").is_file(),
        "{}: not grpcio-sys's sources",
        dir.display()
    );
    dir.to_path_buf()
}
