//! Helpers shared by the unit tests of several modules.

use std::time::{Duration, Instant};

/// Spins (yielding) until `cond` holds; fails the test after 10 s naming `what`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}
