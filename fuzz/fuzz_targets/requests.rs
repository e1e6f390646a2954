//! Random request sequences against the request core over a fuzzed image, checking that no
//! operation panics or takes too long and that answers agree (see `fuzz/logic/requests.rs`).

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rustix::time::{ClockId, clock_gettime};

#[path = "../logic/requests.rs"]
mod requests;

/// CPU time of this thread: unlike the wall clock, not stretched by other processes.
fn thread_cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fuzz_target!(|data: &[u8]| {
    requests::run(data, Some(thread_cpu_time));
});
