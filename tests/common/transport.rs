//! The FUSE transports the fidelity suite runs on: `/dev/fuse` always, and FUSE over io_uring
//! when the kernel offers it (`.ci/run` turns it on; under CI its absence fails the test).

use lazycfs::mount::Transport;

/// The kernel's switch for FUSE over io_uring.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the kernel serves FUSE over io_uring (`fuse.enable_uring`).
pub fn uring_enabled() -> bool {
    std::fs::read_to_string(ENABLE_URING).is_ok_and(|v| matches!(v.trim(), "Y" | "1"))
}

/// Every transport `test` mounts with: `/dev/fuse`, then io_uring unless the kernel does not
/// offer it (a skip, which fails under CI).
pub fn all(test: &str) -> Vec<Transport> {
    let mut transports = vec![Transport::Dev];
    if uring_enabled() {
        transports.push(Transport::Uring);
    } else {
        super::skip(
            &format!("{test} over io_uring"),
            &format!("{ENABLE_URING} is not Y"),
        );
    }
    transports
}
