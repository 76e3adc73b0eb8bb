//! systemd socket activation and socket ownership, settled on the main thread before any
//! other thread exists.
//!
//! 1. [`Passed::from_env`] reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` and removes
//!    them from the environment, so children (shims) never see them. The descriptors (3, 4,
//!    …) are taken only when `LISTEN_PID` is ours; they become close-on-exec.
//! 2. [`resolve`] gives `[grpc] address = "fd://"` (and `[ttrpc] address`) one of those
//!    sockets: the one named `fd://<name>` if a name is written; else one whose name is the
//!    listener's (`ctrd`/`grpc`, `ctrd-ttrpc`/`ttrpc`), one whose path fits preferred; else
//!    a listening unix stream socket whose path fits (ending in `.ttrpc` for ttrpc, anything
//!    else for gRPC). The address is then the socket's path, which plugins and shims see. An
//!    unset ttrpc address next to an activated gRPC socket takes a passed ttrpc socket if
//!    there is one, else `<gRPC path>.ttrpc`, created by ctrd. A plain path address that a
//!    passed socket is bound to takes that socket too, rather than replacing systemd's file.
//! 3. It also resolves `group` (a name or a number) to the socket's gid.
//!
//! A passed socket is never unlinked, chmodded or chowned: systemd made it and owns it.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use super::ServerError;
use crate::config::Config;
use crate::sys;

/// The address prefix that asks for a socket passed by systemd.
pub const FD_SCHEME: &str = "fd://";

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// What systemd passed: the sockets, or why there are none for us.
pub struct Passed {
    sockets: Vec<Socket>,
    /// Why nothing can be used (no variables, another pid, a bad count).
    problem: Option<String>,
}

struct Socket {
    number: i32,
    name: String,
    fd: Option<OwnedFd>,
}

/// A passed listening socket, ready to accept on.
pub struct Inherited {
    pub listener: UnixListener,
    /// Where clients connect (empty for an unnamed or abstract socket).
    pub path: PathBuf,
    /// How it is called in messages: `fd 3 "ctrd"`.
    pub label: String,
}

/// The sockets taken for the gRPC and ttrpc listeners.
#[derive(Default)]
pub struct Endpoints {
    pub grpc: Option<Inherited>,
    pub ttrpc: Option<Inherited>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Grpc,
    Ttrpc,
}

impl Role {
    fn section(self) -> &'static str {
        match self {
            Role::Grpc => "[grpc]",
            Role::Ttrpc => "[ttrpc]",
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Role::Grpc => &["ctrd", "grpc"],
            Role::Ttrpc => &["ctrd-ttrpc", "ttrpc"],
        }
    }

    fn fits_path(self, path: &std::path::Path) -> bool {
        let ttrpc = path.to_string_lossy().ends_with(".ttrpc");
        (self == Role::Ttrpc) == ttrpc
    }
}

impl Passed {
    /// Reads and clears the activation variables; takes the descriptors meant for us.
    /// Call it before any other thread exists (it changes the environment).
    pub fn from_env() -> Passed {
        let mut passed = Passed::read_and_clear(
            |name| std::env::var(name).ok(),
            |name| std::env::remove_var(name),
            std::process::id(),
        );
        for socket in &mut passed.sockets {
            match sys::take_inherited_fd(socket.number) {
                Ok(fd) => socket.fd = Some(fd),
                Err(err) => log::warn!("passed fd {} is not usable: {err}", socket.number),
            }
        }
        passed
    }

    /// Reads the three variables with `get` and removes each with `remove`, whatever they say.
    fn read_and_clear(
        get: impl Fn(&str) -> Option<String>,
        mut remove: impl FnMut(&str),
        me: u32,
    ) -> Passed {
        let names = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
        let [pid, fds, fd_names] = names.map(&get);
        for name in names {
            remove(name);
        }
        Passed::parse(pid.as_deref(), fds.as_deref(), fd_names.as_deref(), me)
    }

    /// The descriptors the variables describe for process `me` (not yet taken).
    fn parse(pid: Option<&str>, fds: Option<&str>, names: Option<&str>, me: u32) -> Passed {
        let refuse = |problem: String| Passed {
            sockets: Vec::new(),
            problem: Some(problem),
        };
        let Some(fds) = fds else {
            return refuse("no socket was passed (LISTEN_FDS is not set)".into());
        };
        let Some(pid) = pid else {
            return refuse(format!("LISTEN_FDS={fds} but LISTEN_PID is not set"));
        };
        match pid.trim().parse::<u32>() {
            Ok(pid) if pid == me => {}
            _ => {
                return refuse(format!(
                    "LISTEN_PID={pid} is not this process ({me}): the sockets were meant for another process"
                ))
            }
        }
        let count = match fds.trim().parse::<i32>() {
            Ok(0) => return refuse("LISTEN_FDS=0: no socket was passed".into()),
            Ok(n) if n > 0 => n,
            _ => return refuse(format!("LISTEN_FDS={fds:?} is not a number of descriptors")),
        };
        let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
        let sockets = (0..count)
            .map(|i| Socket {
                number: FIRST_FD + i,
                name: names.get(i as usize).copied().unwrap_or("").to_string(),
                fd: None,
            })
            .collect();
        Passed {
            sockets,
            problem: None,
        }
    }

    /// The socket for `role` asked for by `address` (`fd://` or `fd://<name>`).
    fn take(&mut self, role: Role, address: &str) -> Result<Inherited, String> {
        let fail = |why: String| format!("{} address {address:?}: {why}", role.section());
        if let Some(problem) = &self.problem {
            return Err(fail(problem.clone()));
        }
        let wanted = address.trim_start_matches(FD_SCHEME);
        let named = |names: &[&str]| {
            self.sockets
                .iter()
                .position(|s| s.fd.is_some() && names.contains(&s.name.as_str()))
        };
        let index = if !wanted.is_empty() {
            named(&[wanted]).ok_or_else(|| {
                fail(format!(
                    "no passed socket is named {wanted:?} (LISTEN_FDNAMES: {})",
                    self.describe()
                ))
            })?
        } else if let Some(index) = self
            .sockets
            .iter()
            .position(|s| {
                s.fd.as_ref().is_some_and(|fd| {
                    role.names().contains(&s.name.as_str())
                        && unix_path(fd).is_some_and(|p| role.fits_path(&p))
                })
            })
            .or_else(|| named(role.names()))
        {
            index
        } else {
            self.sockets
                .iter()
                .position(|s| {
                    s.fd.as_ref().is_some_and(|fd| {
                        matches!(
                            sys::socket_kind(fd),
                            Ok((libc::AF_UNIX, libc::SOCK_STREAM, true))
                        ) && unix_path(fd).is_some_and(|p| role.fits_path(&p))
                    })
                })
                .ok_or_else(|| {
                    fail(format!(
                        "no passed socket fits (passed: {}); name it {:?} (FileDescriptorName=)",
                        self.describe(),
                        role.names()[0]
                    ))
                })?
        };
        let socket = &mut self.sockets[index];
        let label = if socket.name.is_empty() {
            format!("fd {}", socket.number)
        } else {
            format!("fd {} {:?}", socket.number, socket.name)
        };
        let fd = socket
            .fd
            .take()
            .expect("chosen among sockets that have a descriptor");
        match sys::socket_kind(&fd) {
            Ok((libc::AF_UNIX, libc::SOCK_STREAM, true)) => {}
            Ok((libc::AF_UNIX, libc::SOCK_STREAM, false)) => {
                return Err(fail(format!(
                    "{label} is a unix socket that is not listening"
                )))
            }
            Ok((libc::AF_UNIX, _, _)) => {
                return Err(fail(format!(
                    "{label} is not a stream socket (ListenStream=)"
                )))
            }
            Ok(_) => return Err(fail(format!("{label} is not a unix socket"))),
            Err(err) => return Err(fail(format!("{label} is not a socket: {err}"))),
        }
        let path = unix_path(&fd).unwrap_or_default();
        Ok(Inherited {
            listener: UnixListener::from(fd),
            path,
            label,
        })
    }

    /// The passed socket bound to `path`, if there is one.
    fn take_path(&mut self, path: &str) -> Option<Inherited> {
        if path.is_empty() || is_fd(path) {
            return None;
        }
        let wanted = std::path::Path::new(path);
        let socket = self.sockets.iter_mut().find(|s| {
            s.fd.as_ref()
                .and_then(unix_path)
                .is_some_and(|p| p == wanted)
        })?;
        let fd = socket.fd.take()?;
        let label = format!("fd {} {:?}", socket.number, socket.name);
        Some(Inherited {
            listener: UnixListener::from(fd),
            path: wanted.to_path_buf(),
            label,
        })
    }

    /// Whether any passed socket is left that could serve `role` (by name or path).
    fn has_for(&self, role: Role) -> bool {
        self.problem.is_none()
            && self.sockets.iter().any(|s| {
                s.fd.as_ref().is_some_and(|fd| {
                    role.names().contains(&s.name.as_str())
                        || unix_path(fd).is_some_and(|p| role.fits_path(&p))
                })
            })
    }

    fn describe(&self) -> String {
        let all: Vec<String> = self
            .sockets
            .iter()
            .map(|s| {
                let path =
                    s.fd.as_ref()
                        .and_then(unix_path)
                        .map(|p| format!(" {}", p.display()))
                        .unwrap_or_default();
                format!("fd {} {:?}{path}", s.number, s.name)
            })
            .collect();
        if all.is_empty() {
            "none".into()
        } else {
            all.join(", ")
        }
    }

    fn unused(&self) -> usize {
        self.sockets.iter().filter(|s| s.fd.is_some()).count()
    }
}

/// The path a unix socket is bound to, if it has one.
fn unix_path(fd: &OwnedFd) -> Option<PathBuf> {
    let listener = UnixListener::from(fd.try_clone().ok()?);
    let addr = listener.local_addr().ok()?;
    addr.as_pathname().map(PathBuf::from)
}

fn is_fd(address: &str) -> bool {
    address.starts_with(FD_SCHEME)
}

/// Settles the gRPC and ttrpc sockets of `config` (see the module header) and the gids of
/// every socket ctrd creates.
pub fn resolve(config: &mut Config, mut passed: Passed) -> Result<Endpoints, ServerError> {
    let mut endpoints = Endpoints::default();
    config.grpc.gid = super::socket::group("[grpc]", config.grpc.gid, &config.grpc.group)?;
    endpoints.grpc = passed.take_path(&config.grpc.address);
    if is_fd(&config.grpc.address) {
        let inherited = passed
            .take(Role::Grpc, &config.grpc.address)
            .map_err(ServerError::Socket)?;
        if !inherited.path.as_os_str().is_empty() {
            config.grpc.address = inherited.path.to_string_lossy().into_owned();
        }
        log::info!("gRPC uses the socket systemd passed ({})", inherited.label);
        endpoints.grpc = Some(inherited);
    }
    if endpoints.grpc.is_some() && config.ttrpc.address.is_empty() {
        if passed.has_for(Role::Ttrpc) {
            config.ttrpc.address = FD_SCHEME.into();
        } else {
            config.ttrpc.address = format!("{}.ttrpc", config.grpc.address);
            config.ttrpc.uid = config.grpc.uid;
            config.ttrpc.gid = config.grpc.gid;
            if config.ttrpc.group.is_empty() {
                config.ttrpc.group = config.grpc.group.clone();
            }
        }
    }
    config.ttrpc.gid = super::socket::group("[ttrpc]", config.ttrpc.gid, &config.ttrpc.group)?;
    if endpoints.ttrpc.is_none() {
        endpoints.ttrpc = passed.take_path(&config.ttrpc.address);
    }
    if is_fd(&config.ttrpc.address) {
        let inherited = passed
            .take(Role::Ttrpc, &config.ttrpc.address)
            .map_err(ServerError::Socket)?;
        if !inherited.path.as_os_str().is_empty() {
            config.ttrpc.address = inherited.path.to_string_lossy().into_owned();
        }
        log::info!("ttrpc uses the socket systemd passed ({})", inherited.label);
        endpoints.ttrpc = Some(inherited);
    }
    if passed.unused() > 0 {
        log::warn!(
            "ignoring sockets passed by systemd that no address asks for: {}",
            passed.describe()
        );
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    fn passed_with(sockets: Vec<(&str, OwnedFd)>) -> Passed {
        Passed {
            sockets: sockets
                .into_iter()
                .map(|(name, fd)| Socket {
                    number: fd.as_raw_fd(),
                    name: name.into(),
                    fd: Some(fd),
                })
                .collect(),
            problem: None,
        }
    }

    fn listener(dir: &std::path::Path, name: &str) -> OwnedFd {
        OwnedFd::from(UnixListener::bind(dir.join(name)).expect("bind"))
    }

    #[test]
    fn the_variables_must_be_for_this_process() {
        let me = 4242;
        let problem = |pid, fds| {
            Passed::parse(pid, fds, None, me)
                .problem
                .unwrap_or_default()
        };
        assert!(problem(None, None).contains("LISTEN_FDS is not set"));
        assert!(problem(Some("1"), Some("1")).contains("LISTEN_PID=1 is not this process (4242)"));
        assert!(problem(None, Some("1")).contains("LISTEN_PID is not set"));
        assert!(problem(Some("4242"), Some("0")).contains("LISTEN_FDS=0"));
        assert!(problem(Some("4242"), Some("x")).contains("LISTEN_FDS=\"x\""));
        let ok = Passed::parse(Some("4242"), Some("2"), Some("ctrd:ctrd-ttrpc"), me);
        assert!(ok.problem.is_none());
        let found: Vec<(i32, &str)> = ok
            .sockets
            .iter()
            .map(|s| (s.number, s.name.as_str()))
            .collect();
        assert_eq!(found, [(3, "ctrd"), (4, "ctrd-ttrpc")]);
    }

    #[test]
    fn the_variables_are_removed_for_children_whoever_they_were_for() {
        let env = std::cell::RefCell::new(std::collections::BTreeMap::from([
            ("LISTEN_PID".to_string(), "1".to_string()),
            ("LISTEN_FDS".to_string(), "2".to_string()),
            ("LISTEN_FDNAMES".to_string(), "a:b".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]));
        let passed = Passed::read_and_clear(
            |name| env.borrow().get(name).cloned(),
            |name| {
                env.borrow_mut().remove(name);
            },
            99,
        );
        assert!(passed.problem.is_some(), "LISTEN_PID=1 is not us");
        assert_eq!(env.borrow().keys().collect::<Vec<_>>(), ["PATH"]);
    }

    #[test]
    fn a_problem_is_reported_with_the_section_and_address() {
        let mut passed = Passed::parse(None, None, None, 1);
        let err = passed.take(Role::Grpc, "fd://").err().unwrap_or_default();
        assert_eq!(
            err,
            "[grpc] address \"fd://\": no socket was passed (LISTEN_FDS is not set)"
        );
    }

    #[test]
    fn names_win_then_type_and_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut passed = passed_with(vec![
            ("ctrd.socket", listener(dir.path(), "a.sock.ttrpc")),
            ("ctrd.socket", listener(dir.path(), "a.sock")),
            ("mine", listener(dir.path(), "b.sock")),
        ]);
        let grpc = passed.take(Role::Grpc, "fd://").expect("grpc by path");
        assert_eq!(grpc.path, dir.path().join("a.sock"));
        let named = passed.take(Role::Grpc, "fd://mine").expect("by name");
        assert_eq!(named.path, dir.path().join("b.sock"));
        assert!(passed.has_for(Role::Ttrpc));
        let ttrpc = passed.take(Role::Ttrpc, "fd://").expect("ttrpc by path");
        assert_eq!(ttrpc.path, dir.path().join("a.sock.ttrpc"));
        assert_eq!(passed.unused(), 0);

        let mut by_name = passed_with(vec![
            ("other", listener(dir.path(), "c.sock")),
            ("ctrd", listener(dir.path(), "d.sock")),
        ]);
        let grpc = by_name.take(Role::Grpc, "fd://").expect("grpc by name");
        assert_eq!(grpc.path, dir.path().join("d.sock"));
        assert!(grpc.label.contains("\"ctrd\""));
    }

    #[test]
    fn sockets_of_the_wrong_kind_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let datagram = UnixDatagram::bind(dir.path().join("dgram")).expect("bind");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        let file = std::fs::File::create(dir.path().join("plain")).expect("file");
        let mut passed = passed_with(vec![
            ("ctrd", OwnedFd::from(datagram)),
            ("tcp", OwnedFd::from(tcp)),
            ("file", OwnedFd::from(file)),
        ]);
        let err = passed.take(Role::Grpc, "fd://").err().unwrap_or_default();
        assert!(err.contains("is not a stream socket"), "{err}");
        let err = passed
            .take(Role::Grpc, "fd://tcp")
            .err()
            .unwrap_or_default();
        assert!(err.contains("is not a unix socket"), "{err}");
        let err = passed
            .take(Role::Grpc, "fd://file")
            .err()
            .unwrap_or_default();
        assert!(err.contains("is not a socket"), "{err}");
        let err = passed.take(Role::Ttrpc, "fd://").err().unwrap_or_default();
        assert!(err.contains("no passed socket fits"), "{err}");
    }
}
