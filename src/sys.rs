//! The few system calls the standard library does not wrap: signal masks, signalfd, thread
//! ids and per-thread signals, device nodes, symlink times and extended attributes; and the
//! one call into gRPC core that grpcio does not wrap, its start with only the threads ctrd
//! uses (`src/grpc_core.cc`). Every `unsafe` block of the crate lives here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A set of signal numbers.
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn of(signals: &[i32]) -> io::Result<SigSet> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
        if unsafe { libc::sigemptyset(&mut set) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for &sig in signals {
            // SAFETY: as above; an invalid signal number is reported through the return value.
            if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(SigSet(set))
    }
}

/// Blocks `set` in the calling thread; threads spawned afterwards inherit the mask, so the
/// signals stay pending for [`signalfd`] instead of interrupting arbitrary threads.
pub fn block_signals(set: &SigSet) -> io::Result<()> {
    // SAFETY: both pointers are valid for the call; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Unblocks every signal in the calling thread (for child processes, before exec).
pub fn unblock_all_signals() -> io::Result<()> {
    let set = SigSet::of(&[])?;
    // SAFETY: a valid empty set replaces the mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set.0, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// A non-blocking, close-on-exec signalfd for `set`.
pub fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: -1 asks for a new descriptor; the set pointer is valid for the call.
    let fd = unsafe { libc::signalfd(-1, &set.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal from a signalfd; `None` when none is pending.
pub fn read_signal(fd: &OwnedFd) -> io::Result<Option<i32>> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: the buffer is valid for `size` bytes and exclusively borrowed.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(err);
    }
    if n as usize != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short read from signalfd",
        ));
    }
    Ok(Some(info.ssi_signo as i32))
}

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Sends `sig` to process `pid`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill only delivers a signal; a bad pid is reported through the return value.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes reads and writes on `fd` return at once instead of blocking.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; errors come back as -1.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; only the status flags change.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to one thread of this process.
pub fn signal_thread(tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill only delivers a signal; a bad tid is reported through the return value.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Installs `handler` for `sig` with SA_RESTART so interrupted system calls resume.
pub fn install_handler(sig: i32, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: sigaction is plain data, fully initialised below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: the mask pointer is valid; sigemptyset cannot fail for a valid pointer.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is valid for the call and the handler is an extern "C" fn that lives
    // for the whole program.
    if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The first real-time signal number (its value depends on the C library).
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Walks the calling thread's stack from inside a signal handler, handing each return
/// address to `frame` until it returns false.
pub fn trace_in_signal_handler(mut frame: impl FnMut(usize) -> bool) {
    // SAFETY: the unwinder only reads this thread's own stack and takes no lock; callers
    // serialise captures themselves and `frame` must not allocate.
    unsafe {
        backtrace::trace_unsynchronized(|f| frame(f.ip() as usize));
    }
}

/// A handler for a signal that wants the interrupted instruction's address: `on_signal`
/// runs inside the signal handler, so it must not allocate or take locks.
pub trait InterruptHandler {
    fn on_signal(pc: usize);
}

extern "C" fn interrupt_trampoline<H: InterruptHandler>(
    _sig: libc::c_int,
    _info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    H::on_signal(interrupted_pc(context));
}

/// The program counter saved in the `ucontext_t` the kernel handed to a signal handler.
fn interrupted_pc(context: *mut libc::c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    let context = context.cast::<libc::ucontext_t>();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t for the duration of
        // the handler, and only the trampoline above calls this.
        unsafe { (*context).uc_mcontext.gregs[libc::REG_RIP as usize] as usize }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: as above.
        unsafe { (*context).uc_mcontext.pc as usize }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = context;
        0
    }
}

/// A signal's disposition as it was before [`install_interrupt_handler`] replaced it.
pub struct SavedAction {
    signal: i32,
    action: libc::sigaction,
}

/// Installs `H` for `sig` (SA_SIGINFO | SA_RESTART) and returns the previous disposition.
pub fn install_interrupt_handler<H: InterruptHandler>(sig: i32) -> io::Result<SavedAction> {
    // SAFETY: sigaction is plain data, fully initialised below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = interrupt_trampoline::<H>
        as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: the mask pointer is valid; sigemptyset cannot fail for a valid pointer.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: plain data, filled in by sigaction below.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; the trampoline is an extern "C" fn with
    // the SA_SIGINFO signature that lives for the whole program.
    if unsafe { libc::sigaction(sig, &action, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SavedAction {
        signal: sig,
        action: old,
    })
}

/// Puts back the disposition [`install_interrupt_handler`] replaced. The signal is ignored
/// for a moment first, which discards any instance still pending, so a signal generated
/// before the restore cannot reach a default action that would kill the process.
pub fn restore_handler(saved: SavedAction) -> io::Result<()> {
    // SAFETY: sigaction is plain data, fully initialised below.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: the mask pointer is valid.
    unsafe { libc::sigemptyset(&mut ignore.sa_mask) };
    // SAFETY: the pointer is valid for the call; SIG_IGN needs no handler.
    if unsafe { libc::sigaction(saved.signal, &ignore, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `saved.action` is the disposition the kernel returned for this signal.
    if unsafe { libc::sigaction(saved.signal, &saved.action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Arms the process-wide CPU-time timer (`ITIMER_PROF`, which raises SIGPROF in whichever
/// thread is running) to fire every `interval`; a zero interval disarms it. Returns the
/// interval that was set before.
pub fn set_profiling_timer(interval: std::time::Duration) -> io::Result<std::time::Duration> {
    let tv = libc::timeval {
        tv_sec: interval.as_secs() as _,
        tv_usec: interval.subsec_micros() as _,
    };
    let new = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    let mut old = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: both pointers are valid, initialised itimervals for the call.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &new, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(
        std::time::Duration::from_secs(old.it_interval.tv_sec as u64)
            + std::time::Duration::from_micros(old.it_interval.tv_usec as u64),
    )
}

/// The uid of the process at the other end of a connected unix socket.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    // SAFETY: ucred is plain data.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the buffer and length are valid and sized for SO_PEERCRED; a bad fd is reported
    // through the return value.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The raw descriptor number, for registering with mio.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// Flushes the filesystem holding `path` to disk (`syncfs(2)`).
pub fn syncfs(path: &std::path::Path) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts writing `len` bytes of `file` at `offset` back to its device and returns without
/// waiting for them (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`), so that a later
/// `fsync` finds little left to write. Durability still comes from that `fsync` alone.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the C allocator's policy for a long-lived daemon: blocks below `mmap_threshold`
/// (such as the 1 MiB messages of content transfers and gRPC's socket buffers) come from
/// the heap, so a stream reuses the same memory from one message to the next instead of
/// mapping fresh pages for each (a page fault per 4 KiB, and on unmap a TLB flush on every
/// core), and the heap keeps up to `trim_threshold` free at its top before it shrinks (the
/// main thread returns the rest once the daemon is idle, `trim_heap`). Fixed values also keep
/// glibc from raising the mmap threshold on its own. At most `arenas` malloc arenas are
/// created however many threads allocate (each arena keeps its own free memory, so fewer
/// arenas means a smaller peak when several streams run). A no-op with musl.
pub fn tune_allocator(mmap_threshold: usize, trim_threshold: usize, arenas: usize) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called once, before other threads.
    #[allow(unsafe_code)]
    unsafe {
        let int = |n: usize| libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, int(mmap_threshold));
        libc::mallopt(libc::M_TRIM_THRESHOLD, int(trim_threshold));
        libc::mallopt(libc::M_ARENA_MAX, int(arenas));
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = (mmap_threshold, trim_threshold, arenas);
}

/// Gives memory the allocator holds free back to the system, when more than `min_free`
/// bytes of it are free: glibc keeps what a burst freed (a flood of connections, a large
/// message) in its heap, and RSS would stay at the burst's peak. Returns whether it trimmed.
/// A no-op with musl, which returns freed memory itself.
pub fn trim_heap(min_free: usize) -> bool {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        if info.fordblks <= min_free {
            return false;
        }
        // SAFETY: malloc_trim only releases free pages of the heap; no pointer is affected.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = min_free;
        false
    }
}

// File-system calls for layer application and diffs (`crate::diff`).

/// `s` as a C string; an error naming `what` when it holds a NUL byte.
fn c_string(s: &str, what: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains NUL")))
}

fn c_path(path: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Creates a device node or FIFO; `mode` carries the file type bits (`S_IFCHR`, …).
pub fn mknod(path: &std::path::Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let path = c_path(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::mknod(path.as_ptr(), mode as libc::mode_t, dev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets access and modification times (seconds, nanoseconds) without following a final
/// symlink.
pub fn lutimes(path: &std::path::Path, atime: (i64, u32), mtime: (i64, u32)) -> io::Result<()> {
    let path = c_path(path)?;
    let spec = |(sec, nsec): (i64, u32)| libc::timespec {
        tv_sec: sec as _,
        tv_nsec: nsec as _,
    };
    let times = [spec(atime), spec(mtime)];
    // SAFETY: `path` is NUL-terminated and `times` points to two initialised timespecs, both
    // outliving the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads an extended attribute of `path` itself (not a symlink's target); `None` when it is
/// absent or the file system has no extended attributes.
pub fn lgetxattr(path: &std::path::Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let path = c_path(path)?;
    let name = c_string(name, "xattr name")?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated and `buf` is writable for `buf.len()` bytes;
        // all outlive the call.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// The names of the extended attributes of `path` itself (not a symlink's target); empty
/// where the file system has none.
pub fn llistxattr(path: &std::path::Path) -> io::Result<Vec<String>> {
    let path = c_path(path)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `path` is NUL-terminated and `buf` is writable for `buf.len()` bytes; both
        // outlive the call.
        let n = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf
                .split(|&b| b == 0)
                .filter(|name| !name.is_empty())
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .collect());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Sets an extended attribute on `path` itself (not a symlink's target).
pub fn lsetxattr(path: &std::path::Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = c_path(path)?;
    let name = c_string(name, "xattr name")?;
    // SAFETY: both strings are NUL-terminated and `value` is readable for its length; all
    // outlive the call.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// Mounts for the overlay snapshotter's support check and the differ's temporary mounts.

/// `mount(2)`: `data` is the file-system specific option string (may be empty).
pub fn mount(
    source: &str,
    target: &std::path::Path,
    fstype: &str,
    flags: u64,
    data: &str,
) -> io::Result<()> {
    let cstr = |s: &str| c_string(s, "mount argument");
    let source = cstr(source)?;
    let target = c_path(target)?;
    let fstype = cstr(fstype)?;
    let data = cstr(data)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; the kernel
    // only reads them.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A failed file-system context call: the error (its errno kept) and the last message the
/// file system logged to the context, if any.
#[derive(Debug)]
pub struct FsContextError {
    pub error: io::Error,
    pub message: Option<String>,
}

impl FsContextError {
    /// The errno of the call that failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.error.raw_os_error()
    }
}

impl std::fmt::Display for FsContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{}: {message}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

impl From<FsContextError> for io::Error {
    fn from(err: FsContextError) -> io::Error {
        match err.message {
            Some(_) => io::Error::new(err.error.kind(), err.to_string()),
            None => err.error,
        }
    }
}

/// Builds a superblock of `fstype` from `options` (a key with a value, or a flag) with the
/// kernel's file-system context calls (`fsopen`, `fsconfig`, then its create command): the
/// file system checks everything it would check for a mount, but nothing is attached
/// anywhere, so there is nothing to unmount. (Security modules that mediate mounts check
/// only the attaching, which never happens here.) The superblock lives until the returned
/// context is closed (which can take a millisecond). `ENOSYS` on kernels older than 5.2.
pub fn build_superblock(
    fstype: &str,
    options: &[(&str, Option<&str>)],
) -> Result<OwnedFd, FsContextError> {
    const FSOPEN_CLOEXEC: libc::c_long = 1;
    const FSCONFIG_SET_FLAG: libc::c_long = 0;
    const FSCONFIG_SET_STRING: libc::c_long = 1;
    const FSCONFIG_CMD_CREATE: libc::c_long = 6;
    let plain = |error: io::Error| FsContextError {
        error,
        message: None,
    };
    let cstr = |s: &str| c_string(s, "option");
    let fstype = cstr(fstype).map_err(plain)?;
    // SAFETY: `fstype` is a NUL-terminated string that outlives the call; every argument is
    // passed as the full register width the kernel reads.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(plain(io::Error::last_os_error()));
    }
    // SAFETY: fsopen returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let config = |cmd: libc::c_long,
                  key: Option<&std::ffi::CStr>,
                  value: Option<&std::ffi::CStr>| {
        let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), std::ffi::CStr::as_ptr);
        // SAFETY: the key and value are NUL-terminated strings (or null where the command
        // takes none) that outlive the call; the kernel only reads them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fd.as_raw_fd() as libc::c_long,
                cmd,
                ptr(key),
                ptr(value),
                0 as libc::c_long,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let configured = options.iter().try_for_each(|(key, value)| {
        let key = cstr(key)?;
        match value {
            Some(value) => config(FSCONFIG_SET_STRING, Some(&key), Some(&cstr(value)?)),
            None => config(FSCONFIG_SET_FLAG, Some(&key), None),
        }
    });
    match configured.and_then(|()| config(FSCONFIG_CMD_CREATE, None, None)) {
        Ok(()) => Ok(fd),
        Err(error) => Err(FsContextError {
            error,
            message: fs_context_error(&fd),
        }),
    }
}

/// The last error a file-system context logged (`e <message>` read from its descriptor).
fn fs_context_error(fd: &OwnedFd) -> Option<String> {
    let mut last = None;
    // Messages name paths: room for the longest.
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 256];
    // A context keeps up to 8 messages; each read takes the oldest off the log.
    let mut reads = 0;
    while reads < 16 {
        reads += 1;
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // Interrupted, or a message longer than the buffer (taken off all the same).
                Some(libc::EINTR | libc::EMSGSIZE) => continue,
                // ENODATA: the log is empty.
                _ => break,
            }
        }
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
        if let Some(message) = line.strip_prefix("e ") {
            last = Some(message.trim_end().to_string());
        }
    }
    last
}

/// `umount2(2)` with `flags` (`libc::MNT_DETACH`, …).
pub fn unmount(target: &std::path::Path, flags: i32) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unshare(2)` for the calling thread (e.g. `libc::CLONE_NEWNS` for a private mount
/// namespace that ends with the thread).
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare takes no pointers; it only changes the calling thread's namespaces.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `d_type` the file system reports for each entry of `dir` (`libc::DT_UNKNOWN` where
/// it reports none), by name; `.` and `..` left out.
pub fn dir_entry_types(dir: &std::path::Path) -> io::Result<Vec<(std::ffi::OsString, u8)>> {
    use std::os::unix::ffi::OsStrExt;
    let path = c_path(dir)?;
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let stream = unsafe { libc::opendir(path.as_ptr()) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: `stream` is a valid, open directory stream used by this thread only.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose name is NUL-terminated; both stay
        // valid until the next readdir or closedir on `stream`, and are copied before that.
        let (name, kind) = unsafe {
            (
                std::ffi::CStr::from_ptr((*entry).d_name.as_ptr())
                    .to_bytes()
                    .to_vec(),
                (*entry).d_type,
            )
        };
        if name != b"." && name != b".." {
            out.push((std::ffi::OsStr::from_bytes(&name).to_os_string(), kind));
        }
    }
    // SAFETY: `stream` came from opendir and is closed exactly once.
    unsafe { libc::closedir(stream) };
    Ok(out)
}

/// Takes ownership of descriptor `fd`, inherited from the process that started us (systemd's
/// socket activation), and marks it close-on-exec so children (shims) do not inherit it.
/// Call it once per descriptor, at start-up, before anything else may own that number.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed number reports EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; setting FD_CLOEXEC changes only this descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this process by its
    // parent; the caller takes it exactly once, so nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What kind of socket a descriptor is: (domain, type, listening), e.g.
/// `(AF_UNIX, SOCK_STREAM, true)`; an error (ENOTSOCK) for anything that is not a socket.
pub fn socket_kind(fd: &OwnedFd) -> io::Result<(i32, i32, bool)> {
    let option = |name: libc::c_int| -> io::Result<i32> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the buffer and length are valid and sized for an int option; the
        // descriptor is kept open by `fd` for the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    };
    Ok((
        option(libc::SO_DOMAIN)?,
        option(libc::SO_TYPE)?,
        option(libc::SO_ACCEPTCONN)? != 0,
    ))
}

/// The group id of group `name` from the system's group database; `None` when there is no
/// such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in group name"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: group is plain data that getgrnam_r fills in.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf` is sized as passed; the
        // strings getgrnam_r stores point into `buf`, which we do not read afterwards.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok(if result.is_null() {
            None
        } else {
            Some(group.gr_gid)
        });
    }
}

/// Hands an accepted connection to a started gRPC server, which serves it like one it had
/// accepted itself (used for listening sockets gRPC core did not create).
pub fn grpc_serve_connection(
    server: &mut grpcio::Server,
    stream: std::os::unix::net::UnixStream,
) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(stream);
    // SAFETY: `fd` is a connected stream socket we own; ownership passes to gRPC core, which
    // closes it with the connection, and nothing here touches it again.
    unsafe { server.add_channel_from_fd(fd) };
    Ok(())
}

/// How gRPC core was started for this process (see `src/grpc_core.cc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCore {
    /// Without the resolver executor, and its default event engine without a poller thread
    /// (nothing in ctrd uses engine I/O).
    WithoutEnginePoller,
    /// GRPC_EXPERIMENTS turned on event-engine I/O: the stock engine, poller thread and all
    /// (the resolver executor is still off).
    Stock,
    /// Something had started gRPC core already: left as it was.
    AlreadyRunning,
}

extern "C" {
    fn ctrd_grpc_core_start() -> libc::c_int;
}

/// Starts gRPC core once for the process, before any grpcio environment, with only the
/// threads ctrd's servers and clients use; callers racing the first call wait for it. Core
/// stays initialised until the process exits. Every grpcio environment the crate builds
/// comes after a call to this: switching an executor off while gRPC core is in use is not
/// safe.
pub fn start_grpc_core() -> GrpcCore {
    static STARTED: std::sync::OnceLock<GrpcCore> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| {
        // SAFETY: the function takes nothing and only calls gRPC core's own set-up; OnceLock
        // runs it once, before any other use of gRPC core in this process, which it needs.
        match unsafe { ctrd_grpc_core_start() } {
            1 => GrpcCore::WithoutEnginePoller,
            2 => GrpcCore::AlreadyRunning,
            _ => GrpcCore::Stock,
        }
    })
}

// Process calls for the runtime v2 shim manager (`crate::runtime`).

/// A descriptor that becomes readable when process `pid` exits (`pidfd_open(2)`); works
/// for processes that are not our children.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is readable within `timeout_ms` (`poll(2)`; 0 checks without waiting).
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one initialised pollfd that lives across the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc >= 0 {
            return Ok(rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalfd_reports_a_blocked_signal_sent_to_this_thread() {
        let handle = std::thread::spawn(|| {
            let set = SigSet::of(&[libc::SIGUSR2]).expect("set");
            block_signals(&set).expect("block");
            let fd = signalfd(&set).expect("signalfd");
            assert_eq!(read_signal(&fd).expect("read"), None);
            signal_thread(gettid(), libc::SIGUSR2).expect("tgkill");
            assert_eq!(read_signal(&fd).expect("read"), Some(libc::SIGUSR2));
        });
        handle.join().expect("thread");
    }
}
