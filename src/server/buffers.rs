//! The buffers both transports reuse, one set per thread, so that no hot path allocates:
//! each grows to the largest reply once.

use std::cell::RefCell;

thread_local! {
    /// Bytes copied before the image's last check: reads that cannot point into the mapping
    /// (objects, data across extents), xattr values, symlink targets.
    static DATA: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// listxattr's name list.
    static NAMES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's data buffer.
pub(crate) fn with_data<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    DATA.with_borrow_mut(f)
}

/// Runs `f` with this thread's name-list buffer (distinct from the data buffer: a name list
/// is copied into that before it is sent).
pub(crate) fn with_names<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    NAMES.with_borrow_mut(f)
}
