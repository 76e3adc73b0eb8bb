//! SIGUSR1 and `/debug/pprof/threads`: a list of every thread by id and name with its job
//! (`super::threads`), then each thread's backtrace; SIGUSR1 writes it to the log and to
//! `$TMPDIR/ctrd.<pid>.stacks.log`.
//!
//! Each thread is asked, with a real-time signal sent to it alone, to record the return
//! addresses of its own stack into a shared slot; the dumping thread then symbolises them.
//! One thread is captured at a time, under a lock.

use std::fmt::Write as _;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::sys;

const MAX_FRAMES: usize = 96;
/// How long to wait for one thread to record its stack (it may be blocked in a system call
/// that the signal interrupts, or running on another core).
const CAPTURE_TIMEOUT: Duration = Duration::from_millis(500);

static FRAMES: [AtomicUsize; MAX_FRAMES] = [const { AtomicUsize::new(0) }; MAX_FRAMES];
static COUNT: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicBool = AtomicBool::new(false);
static CAPTURE: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();

fn capture_signal() -> i32 {
    sys::sigrtmin() + 3
}

extern "C" fn record_stack(_sig: libc::c_int) {
    let mut n = 0;
    sys::trace_in_signal_handler(|ip| {
        if n < MAX_FRAMES {
            FRAMES[n].store(ip, Ordering::Relaxed);
            n += 1;
            true
        } else {
            false
        }
    });
    COUNT.store(n, Ordering::Relaxed);
    DONE.store(true, Ordering::Release);
}

/// The text of every thread's stack.
pub fn dump() -> String {
    INSTALL.call_once(|| {
        if let Err(err) = sys::install_handler(capture_signal(), record_stack) {
            log::warn!("cannot install the stack capture handler: {err}");
        }
    });
    let _guard = CAPTURE.lock();
    let me = sys::gettid();
    let mut out = String::new();
    let mut tids: Vec<i32> = fs::read_dir("/proc/self/task")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    let names: Vec<String> = tids
        .iter()
        .map(|tid| {
            fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into())
        })
        .collect();
    let _ = writeln!(out, "{} threads:", tids.len());
    for (tid, name) in tids.iter().zip(&names) {
        let job = super::threads::lookup(name).map_or("(not one of ctrd's)", |k| k.job);
        let _ = writeln!(out, "  {tid:>8}  {name:<16} {job}");
    }
    out.push('\n');
    for (&tid, name) in tids.iter().zip(&names) {
        let _ = writeln!(out, "thread {tid} \"{name}\":");
        let frames = if tid == me {
            let mut own = Vec::new();
            backtrace::trace(|frame| {
                own.push(frame.ip() as usize);
                own.len() < MAX_FRAMES
            });
            Some(own)
        } else {
            capture(tid)
        };
        match frames {
            Some(frames) => symbolise(&frames, &mut out),
            None => {
                let _ = writeln!(out, "    (no answer; thread busy or exited)");
            }
        }
        out.push('\n');
    }
    out
}

fn capture(tid: i32) -> Option<Vec<usize>> {
    DONE.store(false, Ordering::Release);
    sys::signal_thread(tid, capture_signal()).ok()?;
    let deadline = Instant::now() + CAPTURE_TIMEOUT;
    while !DONE.load(Ordering::Acquire) {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::yield_now();
    }
    let n = COUNT.load(Ordering::Relaxed);
    Some(
        FRAMES[..n]
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .collect(),
    )
}

fn symbolise(frames: &[usize], out: &mut String) {
    for (i, &ip) in frames.iter().enumerate() {
        let mut named = false;
        backtrace::resolve(ip as *mut std::ffi::c_void, |symbol| {
            if named {
                return;
            }
            named = true;
            let name = symbol
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into());
            let _ = write!(out, "  {i:>3}: {ip:#018x} {name}");
            if let (Some(file), Some(line)) = (symbol.filename(), symbol.lineno()) {
                let _ = write!(out, " at {}:{line}", file.display());
            }
            out.push('\n');
        });
        if !named {
            let _ = writeln!(out, "  {i:>3}: {ip:#018x} ?");
        }
    }
}

/// Dumps every stack to the log and to `$TMPDIR/ctrd.<pid>.stacks.log`.
pub fn dump_to_log_and_file() {
    let text = dump();
    log::info!("=== BEGIN thread stack dump ===\n{text}=== END thread stack dump ===");
    let path = std::env::temp_dir().join(format!("ctrd.{}.stacks.log", std::process::id()));
    match fs::write(&path, &text) {
        Ok(()) => log::info!("thread stack dump written to {}", path.display()),
        Err(err) => log::error!("failed to write stack dump to {}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_other_threads_and_their_frames() {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
        let parked = std::thread::Builder::new()
            .name("stack-test-peer".into())
            .spawn(move || {
                let _ = started_tx.send(());
                let _ = rx.recv();
            })
            .expect("spawn");
        // A new thread has its creator's name until it has set its own.
        started.recv().expect("peer started");
        let text = dump();
        drop(tx);
        parked.join().expect("join");
        let section = text
            .split("\n\n")
            .find(|s| s.contains("\"stack-test-peer\""))
            .unwrap_or_else(|| panic!("peer thread listed: {text}"));
        assert!(section.contains("  0: 0x"), "frames recorded: {section}");
        // The list up front names every thread with its job.
        let (list, _) = text.split_once("\n\n").expect("a list, then the stacks");
        assert!(list.starts_with(|c: char| c.is_ascii_digit()), "{list}");
        assert!(
            list.lines()
                .next()
                .is_some_and(|l| l.ends_with(" threads:")),
            "{list}"
        );
        let peer = list
            .lines()
            .find(|l| l.contains(" stack-test-peer "))
            .expect("peer in the list");
        assert!(peer.ends_with("(not one of ctrd's)"), "{peer}");
    }
}
