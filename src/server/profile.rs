//! A sampling CPU profiler whose output `go tool pprof` reads.
//!
//! The thread that asks for a profile runs it, in these steps:
//! 1. Claim the single profiling slot (a second concurrent request gets [`ProfileError::Busy`]).
//! 2. Install a SIGPROF handler and arm `ITIMER_PROF`, which raises SIGPROF in whichever
//!    thread of the process is using the CPU, `hz` times per CPU-second.
//! 3. The handler records the interrupted instruction and the return addresses of its
//!    thread's stack into a preallocated ring of slots (atomics only: no allocation, no lock);
//!    the profiling thread drains the ring every [`DRAIN_EVERY`] into a map of identical
//!    stacks, so a long profile needs no more memory than its distinct stacks.
//! 4. After the duration: disarm the timer, restore the previous SIGPROF disposition, wait
//!    for handlers still running, drain the rest, symbolise with `backtrace::resolve`, and
//!    encode a `perftools.profiles.Profile`.
//!
//! The result is UNCOMPRESSED protobuf: pprof tooling accepts it as well as the gzipped
//! form, and the crate has no compressor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use protobuf::{Message, MessageField};

use crate::api::profile::{Function, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::sys;

/// Return addresses kept per sample (the outermost callers of deeper stacks are cut).
const MAX_FRAMES: usize = 64;
/// Samples the ring holds between two drains; more are counted as dropped.
const CAPACITY: usize = 1024;
/// How often the profiling thread empties the ring.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// The highest sampling rate accepted (the kernel's CPU-time timers are not much finer).
const MAX_HZ: u32 = 10_000;

/// Ring of samples: the handler claims ticket `HEAD`, fills slot `ticket % CAPACITY`, then
/// publishes it by storing `ticket + 1` in `SEQ`; the profiling thread reads tickets in order
/// from `TAIL` while they are published.
static FRAMES: [AtomicUsize; CAPACITY * MAX_FRAMES] =
    [const { AtomicUsize::new(0) }; CAPACITY * MAX_FRAMES];
static LENS: [AtomicUsize; CAPACITY] = [const { AtomicUsize::new(0) }; CAPACITY];
static PCS: [AtomicUsize; CAPACITY] = [const { AtomicUsize::new(0) }; CAPACITY];
static SEQ: [AtomicUsize; CAPACITY] = [const { AtomicUsize::new(0) }; CAPACITY];
static HEAD: AtomicUsize = AtomicUsize::new(0);
static TAIL: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);
/// Whether the handler should record; handlers count themselves in `IN_FLIGHT` first, so
/// once `ACTIVE` is false and `IN_FLIGHT` is zero no handler touches the ring.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// The single profiling slot.
static RUNNING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("a CPU profile is already running")]
    Busy,
    #[error("sampling rate {0} Hz is outside 1..={MAX_HZ}")]
    Rate(u32),
    #[error("cannot install the SIGPROF handler")]
    Handler(#[source] std::io::Error),
    #[error("cannot set the profiling timer")]
    Timer(#[source] std::io::Error),
    #[error("cannot encode the profile")]
    Encode(#[source] protobuf::Error),
}

/// Samples every thread of the process `hz` times per CPU-second for `duration` and returns
/// the profile as uncompressed pprof protobuf (`go tool pprof` reads it as is).
pub fn cpu_profile(duration: Duration, hz: u32) -> Result<Vec<u8>, ProfileError> {
    let mut session = Session::start(hz)?;
    let deadline = session.started + duration;
    loop {
        session.drain();
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(DRAIN_EVERY.min(deadline - now));
    }
    session
        .finish()?
        .write_to_bytes()
        .map_err(ProfileError::Encode)
}

struct Sampler;

impl sys::InterruptHandler for Sampler {
    fn on_signal(pc: usize) {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if ACTIVE.load(Ordering::SeqCst) {
            record(pc);
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs inside the signal handler: atomics only.
fn record(pc: usize) {
    let mut ticket = HEAD.load(Ordering::Relaxed);
    loop {
        if ticket.wrapping_sub(TAIL.load(Ordering::Acquire)) >= CAPACITY {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match HEAD.compare_exchange_weak(
            ticket,
            ticket.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(current) => ticket = current,
        }
    }
    let slot = ticket % CAPACITY;
    let base = slot * MAX_FRAMES;
    let mut n = 0;
    sys::trace_in_signal_handler(|ip| {
        if n < MAX_FRAMES {
            FRAMES[base + n].store(ip, Ordering::Relaxed);
            n += 1;
            true
        } else {
            false
        }
    });
    PCS[slot].store(pc, Ordering::Relaxed);
    LENS[slot].store(n, Ordering::Relaxed);
    SEQ[slot].store(ticket.wrapping_add(1), Ordering::Release);
}

/// One running profile; dropping it stops sampling and frees the profiling slot.
struct Session {
    started: Instant,
    wall: SystemTime,
    hz: u32,
    saved: Option<sys::SavedAction>,
    armed: bool,
    /// Stacks, leaf first, with how many samples each got.
    stacks: HashMap<Vec<usize>, i64>,
}

impl Session {
    fn start(hz: u32) -> Result<Session, ProfileError> {
        if hz == 0 || hz > MAX_HZ {
            return Err(ProfileError::Rate(hz));
        }
        if RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ProfileError::Busy);
        }
        // No handler is running (the previous session waited for them all), so whatever the
        // ring still holds is stale.
        TAIL.store(HEAD.load(Ordering::Acquire), Ordering::Release);
        DROPPED.store(0, Ordering::Relaxed);
        let mut session = Session {
            started: Instant::now(),
            wall: SystemTime::now(),
            hz,
            saved: None,
            armed: false,
            stacks: HashMap::new(),
        };
        ACTIVE.store(true, Ordering::SeqCst);
        session.saved = Some(
            sys::install_interrupt_handler::<Sampler>(libc::SIGPROF)
                .map_err(ProfileError::Handler)?,
        );
        let interval = Duration::from_nanos(1_000_000_000 / u64::from(hz));
        sys::set_profiling_timer(interval).map_err(ProfileError::Timer)?;
        session.armed = true;
        Ok(session)
    }

    /// Moves every published sample out of the ring.
    fn drain(&mut self) {
        let mut tail = TAIL.load(Ordering::Relaxed);
        loop {
            let slot = tail % CAPACITY;
            if SEQ[slot].load(Ordering::Acquire) != tail.wrapping_add(1) {
                break;
            }
            let n = LENS[slot].load(Ordering::Relaxed);
            let pc = PCS[slot].load(Ordering::Relaxed);
            let frames: Vec<usize> = FRAMES[slot * MAX_FRAMES..slot * MAX_FRAMES + n]
                .iter()
                .map(|f| f.load(Ordering::Relaxed))
                .collect();
            *self
                .stacks
                .entry(interrupted_stack(pc, frames))
                .or_insert(0) += 1;
            tail = tail.wrapping_add(1);
            TAIL.store(tail, Ordering::Release);
        }
    }

    /// Stops sampling; afterwards no handler touches the ring. Idempotent.
    fn stop(&mut self) -> Result<(), ProfileError> {
        let mut result = Ok(());
        if self.armed {
            self.armed = false;
            if let Err(err) = sys::set_profiling_timer(Duration::ZERO) {
                result = Err(ProfileError::Timer(err));
            }
        }
        ACTIVE.store(false, Ordering::SeqCst);
        if let Some(saved) = self.saved.take() {
            if let Err(err) = sys::restore_handler(saved) {
                result = result.and(Err(ProfileError::Handler(err)));
            }
        }
        while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        result
    }

    fn finish(mut self) -> Result<Profile, ProfileError> {
        let elapsed = self.started.elapsed();
        self.stop()?;
        self.drain();
        let dropped = DROPPED.load(Ordering::Relaxed);
        Ok(build_profile(
            &self.stacks,
            self.hz,
            self.wall,
            elapsed,
            dropped,
        ))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            log::warn!("stopping the CPU profiler: {err}");
        }
        RUNNING.store(false, Ordering::Release);
    }
}

/// The part of a recorded stack below the signal handler: from the interrupted instruction
/// outwards. When the unwinder did not pass through the interrupted frame, the instruction
/// alone is kept rather than charging the handler's own frames.
fn interrupted_stack(pc: usize, frames: Vec<usize>) -> Vec<usize> {
    match frames.iter().position(|&ip| ip == pc) {
        Some(at) => frames[at..].to_vec(),
        None if pc != 0 => vec![pc],
        None => frames,
    }
}

/// The string table; index 0 is always "".
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut strings = Strings {
            table: Vec::new(),
            index: HashMap::new(),
        };
        strings.intern("");
        strings
    }

    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// An executable, file-backed region of `/proc/self/maps`.
struct Region {
    start: u64,
    limit: u64,
    offset: u64,
    path: String,
}

/// The executable file mappings, the main binary's first.
fn executable_regions() -> Vec<Region> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut regions: Vec<Region> = maps.lines().filter_map(parse_region).collect();
    regions.sort_by_key(|r| (r.path != exe, r.start));
    regions
}

fn parse_region(line: &str) -> Option<Region> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (start, limit) = range.split_once('-')?;
    Some(Region {
        start: u64::from_str_radix(start, 16).ok()?,
        limit: u64::from_str_radix(limit, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
    })
}

fn value_type(strings: &mut Strings, kind: &str, unit: &str) -> ValueType {
    let mut vt = ValueType::new();
    vt.type_ = strings.intern(kind);
    vt.unit = strings.intern(unit);
    vt
}

fn build_profile(
    stacks: &HashMap<Vec<usize>, i64>,
    hz: u32,
    wall: SystemTime,
    elapsed: Duration,
    dropped: usize,
) -> Profile {
    let period = 1_000_000_000 / i64::from(hz);
    let mut strings = Strings::new();
    let mut profile = Profile::new();
    profile.sample_type = vec![
        value_type(&mut strings, "samples", "count"),
        value_type(&mut strings, "cpu", "nanoseconds"),
    ];
    profile.period_type = MessageField::some(value_type(&mut strings, "cpu", "nanoseconds"));
    profile.period = period;
    profile.duration_nanos = i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
    profile.time_nanos = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if dropped > 0 {
        let note = format!("{dropped} samples dropped: the sample buffer was full");
        profile.comment.push(strings.intern(&note));
    }

    let regions = executable_regions();
    for (i, region) in regions.iter().enumerate() {
        let mut mapping = Mapping::new();
        mapping.id = i as u64 + 1;
        mapping.memory_start = region.start;
        mapping.memory_limit = region.limit;
        mapping.file_offset = region.offset;
        mapping.filename = strings.intern(&region.path);
        mapping.has_functions = true;
        mapping.has_filenames = true;
        mapping.has_line_numbers = true;
        mapping.has_inline_frames = true;
        profile.mapping.push(mapping);
    }

    let mut location_ids: HashMap<usize, u64> = HashMap::new();
    let mut function_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut ordered: Vec<(&Vec<usize>, &i64)> = stacks.iter().collect();
    ordered.sort();
    for (stack, &count) in ordered {
        let mut sample = Sample::new();
        for &address in stack {
            let id = match location_ids.get(&address) {
                Some(&id) => id,
                None => {
                    let id = profile.location.len() as u64 + 1;
                    let location = locate(
                        id,
                        address,
                        &regions,
                        &mut strings,
                        &mut function_ids,
                        &mut profile.function,
                    );
                    profile.location.push(location);
                    location_ids.insert(address, id);
                    id
                }
            };
            sample.location_id.push(id);
        }
        sample.value = vec![count, count * period];
        profile.sample.push(sample);
    }
    profile.string_table = strings.table;
    profile
}

/// The location of one address: its mapping and its (possibly inlined) source lines.
fn locate(
    id: u64,
    address: usize,
    regions: &[Region],
    strings: &mut Strings,
    function_ids: &mut HashMap<(String, String), u64>,
    functions: &mut Vec<Function>,
) -> Location {
    let mut location = Location::new();
    location.id = id;
    location.address = address as u64;
    location.mapping_id = regions
        .iter()
        .position(|r| (r.start..r.limit).contains(&(address as u64)))
        .map_or(0, |i| i as u64 + 1);
    backtrace::resolve(address as *mut std::ffi::c_void, |symbol| {
        let Some(name) = symbol.name() else {
            return;
        };
        let readable = format!("{name:#}");
        let file = symbol
            .filename()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = (readable, file);
        let function_id = match function_ids.get(&key) {
            Some(&fid) => fid,
            None => {
                let fid = functions.len() as u64 + 1;
                let mut function = Function::new();
                function.id = fid;
                function.name = strings.intern(&key.0);
                function.system_name = match name.as_str() {
                    Some(raw) => strings.intern(raw),
                    None => function.name,
                };
                function.filename = strings.intern(&key.1);
                functions.push(function);
                function_ids.insert(key, fid);
                fid
            }
        };
        let mut line = Line::new();
        line.function_id = function_id;
        line.line = symbol.lineno().map_or(0, i64::from);
        location.line.push(line);
    });
    location
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use parking_lot::Mutex;

    /// The profiler is process-wide; tests that use it take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[inline(never)]
    fn burn_cpu_until(stop: &AtomicBool) -> u64 {
        let mut x: u64 = 1;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        x
    }

    fn function_names(profile: &Profile) -> Vec<&str> {
        profile
            .function
            .iter()
            .map(|f| profile.string_table[f.name as usize].as_str())
            .collect()
    }

    #[test]
    fn profile_of_a_busy_thread_names_its_loop() {
        let _serial = SERIAL.lock();
        let stop = Arc::new(AtomicBool::new(false));
        let burner = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("profile-test-burn".into())
                .spawn(move || burn_cpu_until(&stop))
                .expect("spawn")
        };
        let result = cpu_profile(Duration::from_millis(300), 200);
        stop.store(true, Ordering::Relaxed);
        burner.join().expect("join");
        let bytes = result.expect("profile");
        if let Ok(path) = std::env::var("CTRD_PROFILE_OUT") {
            std::fs::write(path, &bytes).expect("write profile");
        }

        let profile = Profile::parse_from_bytes(&bytes).expect("decode");
        let table = &profile.string_table;
        assert_eq!(table[0], "");
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|t| {
                (
                    table[t.type_ as usize].as_str(),
                    table[t.unit as usize].as_str(),
                )
            })
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(profile.period, 5_000_000);
        assert!(!profile.sample.is_empty(), "no samples");
        let ids: std::collections::HashSet<u64> = profile.location.iter().map(|l| l.id).collect();
        for sample in &profile.sample {
            assert_eq!(sample.value.len(), 2);
            for id in &sample.location_id {
                assert!(ids.contains(id), "location {id} missing");
            }
        }
        assert!(profile.mapping[0].has_functions);
        let names = function_names(&profile);
        assert!(
            names.iter().any(|n| n.contains("burn_cpu_until")),
            "busy loop not found in {names:?}"
        );
    }

    #[test]
    fn a_second_concurrent_profile_is_busy() {
        let _serial = SERIAL.lock();
        let first = Session::start(100).expect("first profile");
        let second = std::thread::spawn(|| cpu_profile(Duration::from_millis(10), 100))
            .join()
            .expect("join");
        assert!(matches!(second, Err(ProfileError::Busy)), "{second:?}");
        first.finish().expect("first finishes");
        // The slot is free again.
        Session::start(100)
            .expect("after the first")
            .finish()
            .expect("finish");
    }

    #[test]
    fn rate_out_of_range_is_refused() {
        assert!(matches!(
            cpu_profile(Duration::ZERO, 0),
            Err(ProfileError::Rate(0))
        ));
    }
}
