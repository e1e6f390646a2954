//! What one FUSE round trip costs, and the least any round trip can cost on this machine.
//!
//! A FUSE request is synchronous: the thread that asked sleeps until the server answers. On the
//! CPU that asked, that is at least two context switches (to the server and back), whatever
//! the server does and whichever transport carries the request. [`switch_pair`] measures those
//! two switches alone, between two threads ping-ponging a byte over pipes on one CPU, so the
//! report can say how much of a workload's gap to the kernel its round trips make at the very
//! least: requests × switch pair.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, ensure};
use rustix::io::Errno;

use crate::report::median;

/// Round trips per sample: a second or so on a FUSE mount, so that the server's CPU time
/// (counted in 10 ms ticks) over them is known within a few percent.
pub const TRIPS: usize = 100_000;
/// The name asked for: absent everywhere, so every filesystem answers ENODATA at once.
const ABSENT: &str = "user.lazycfs-bench.absent";

/// The median time of one null request on `path`: `lgetxattr` of a name nobody has. On a FUSE
/// mount each one is a GETXATTR round trip (FUSE caches no xattrs, not even absent ones); on the
/// kernel mount it is the system call alone.
pub fn round_trip(path: &Path) -> anyhow::Result<f64> {
    let mut buf = [0u8; 64];
    let mut times = Vec::with_capacity(TRIPS);
    for _ in 0..TRIPS {
        let start = Instant::now();
        let answer = rustix::fs::lgetxattr(path, ABSENT, &mut buf);
        times.push(start.elapsed().as_secs_f64());
        match answer {
            Err(Errno::NODATA | Errno::OPNOTSUPP) => {}
            Ok(_) => anyhow::bail!("{}: {ABSENT} exists", path.display()),
            Err(e) => return Err(e).with_context(|| format!("lgetxattr {}", path.display())),
        }
    }
    median(&times).context("no round trip")
}

/// The median time of two context switches on CPU 0: a byte sent from one thread to another
/// and back, both pinned to that CPU.
pub fn switch_pair() -> anyhow::Result<f64> {
    let original = rustix::thread::sched_getaffinity(None).context("reading the CPU affinity")?;
    let (ping_read, ping_write) = rustix::pipe::pipe()?;
    let (pong_read, pong_write) = rustix::pipe::pipe()?;
    let echo = std::thread::spawn(move || -> anyhow::Result<()> {
        pin_to_cpu0()?;
        let mut byte = [0u8];
        // Ends when the other side closes its end of the ping pipe.
        while read_byte(&ping_read, &mut byte)? {
            rustix::io::write(&pong_write, &byte)?;
        }
        Ok(())
    });
    let times = (|| -> anyhow::Result<Vec<f64>> {
        pin_to_cpu0()?;
        let mut byte = [0u8];
        let mut times = Vec::with_capacity(TRIPS);
        for _ in 0..TRIPS {
            let start = Instant::now();
            rustix::io::write(&ping_write, &byte)?;
            ensure!(read_byte(&pong_read, &mut byte)?, "the echo thread ended");
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(times)
    })();
    drop(ping_write);
    let echoed = echo
        .join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?;
    // The workloads this thread starts next inherit its affinity.
    rustix::thread::sched_setaffinity(None, &original).context("restoring the CPU affinity")?;
    echoed?;
    median(&times?).context("no round trip")
}

fn read_byte(fd: &OwnedFd, byte: &mut [u8; 1]) -> anyhow::Result<bool> {
    loop {
        match rustix::io::read(fd, &mut byte[..]) {
            Ok(n) => return Ok(n == 1),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(std::io::Error::from(e)).context("reading the pipe"),
        }
    }
}

fn pin_to_cpu0() -> anyhow::Result<()> {
    let mut cpus = rustix::thread::CpuSet::new();
    cpus.set(0);
    rustix::thread::sched_setaffinity(None, &cpus).context("pinning to CPU 0")
}
