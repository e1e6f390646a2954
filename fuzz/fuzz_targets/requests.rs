//! Random request sequences against the request core over a fuzzed image, checking that no
//! operation panics or takes too long and that answers agree (see `fuzz/logic/requests.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../logic/requests.rs"]
mod requests;

fuzz_target!(|data: &[u8]| {
    requests::run(data, Some(requests::OP_TIME));
});
