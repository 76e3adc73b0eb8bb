//! The few system calls the standard library does not wrap: signal masks, signalfd, thread
//! ids and per-thread signals. Every `unsafe` block of the crate lives here.
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
