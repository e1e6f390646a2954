//! The image bytes: a read-only memory mapping of the image file, or bytes held in memory.
//!
//! This is the only module with `unsafe`: mapping a file is unsafe in Rust because another
//! process could change the file under us. Images are immutable by contract; the decoder
//! never trusts what it reads anyway (every offset is bounds-checked against the mapping's
//! length at the time of use), so a concurrent writer can only produce decoding errors, and
//! truncation is guarded by the mapping being private and read-only.

use std::fs::File;
use std::io;
use std::ops::Deref;

/// Bytes of an image, borrowed by everything the decoder hands out.
pub(crate) enum Mapping {
    Mapped(memmap2::Mmap),
    Owned(Box<[u8]>),
}

impl Mapping {
    pub(crate) fn map(file: &File) -> io::Result<Self> {
        // SAFETY: the mapping is private and read-only; lazycfs treats its contents as
        // untrusted bytes and checks every offset before use, so concurrent modification of the
        // file can yield garbage (reported as corruption) but not undefined behaviour in our
        // code beyond what memmap2 documents for shared files. A zero-length file cannot be
        // mapped on Linux, so it is read into an empty buffer instead.
        if file.metadata()?.len() == 0 {
            return Ok(Mapping::Owned(Box::new([])));
        }
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        Ok(Mapping::Mapped(map))
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Mapping::Mapped(m) => m,
            Mapping::Owned(b) => b,
        }
    }
}
