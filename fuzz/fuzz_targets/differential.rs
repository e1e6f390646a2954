//! Differential fuzzing against the `composefs` crate's reader: whenever it accepts an image,
//! `lazycfs::dump` prints the same dumpfile (see `fuzz/logic/differential.rs`). Panics of the
//! composefs reader count as rejections; each distinct one is printed once.

#![no_main]

use std::collections::HashSet;
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;

#[path = "../logic/differential.rs"]
mod differential;

static REFERENCE_PANICS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    if let differential::Outcome::ReferencePanicked(message) = differential::run(data) {
        let mut seen = REFERENCE_PANICS.lock().unwrap();
        if seen
            .get_or_insert_with(HashSet::new)
            .insert(message.clone())
        {
            eprintln!("composefs reader panicked (counted as a rejection): {message}");
        }
    }
});
