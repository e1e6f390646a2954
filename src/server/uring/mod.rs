//! FUSE over io_uring (kernel 6.14+, `fuse.enable_uring=1`): one queue per possible CPU, each
//! served by a thread pinned to that CPU, so a request is answered on the CPU that made it.
//!
//! fuser mounts and negotiates INIT (`negotiate` asks for `FUSE_OVER_IO_URING` there), and
//! keeps serving `/dev/fuse`, which still carries FORGET and INTERRUPT. After INIT every
//! queue thread registers its ring entries with `FUSE_IO_URING_CMD_REGISTER`; the kernel sends
//! requests through the rings once every queue has registered (until then they wait). Each
//! thread then loops: wait for completions, answer each request through the shared
//! [`Server`]'s core, hand the entry back with `COMMIT_AND_FETCH`. When the connection ends
//! (unmount, abort), every pending command fails and the thread ends.
//!
//! The unsafe half (the ring and the buffers the kernel writes into) is `crate::sys::uring`;
//! `dispatch` decodes a request and `encode` writes replies, with [`abi`]'s structs.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use fuser::{InitFlags, KernelConfig};
use rustix::io::Errno;

use super::{Server, abi};
use crate::sys::uring::{Event, QueueRing, RegisterError};

mod dispatch;
mod encode;
#[cfg(test)]
mod tests;

/// The largest write the kernel may send (there are none: the filesystem is read-only). It
/// bounds the payload buffer every ring entry needs.
pub const MAX_WRITE: u32 = 128 * 1024;
/// Ring entries per queue: requests the kernel can hand a queue thread at once.
const DEPTH: usize = 4;
/// The kernel's switch for FUSE over io_uring.
const ENABLE_PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// At INIT: asks for FUSE over io_uring; whether the kernel offers it. Lowers the request
/// size limits so that each ring entry's payload buffer stays small.
pub(crate) fn negotiate(config: &mut KernelConfig) -> bool {
    if config
        .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
        .is_err()
    {
        return false;
    }
    let _ = config.set_max_write(MAX_WRITE);
    if let Err(max) = config.set_max_readahead(MAX_WRITE) {
        let _ = config.set_max_readahead(max);
    }
    true
}

/// The payload buffer of a ring entry: the kernel wants room for the largest request and
/// reply, `max(FUSE_MIN_READ_BUFFER, max_write, max_pages * PAGE_SIZE)`.
fn payload_len() -> usize {
    let page = rustix::param::page_size();
    let max_pages = (MAX_WRITE as usize)
        .div_ceil(page)
        .max(abi::FUSE_DEFAULT_MAX_PAGES_PER_REQ);
    (max_pages * page).max(abi::FUSE_MIN_READ_BUFFER)
}

/// One ring per queue, created before mounting: creating them is how the server learns that
/// it may ask for FUSE over io_uring at INIT.
pub struct Rings(Vec<QueueRing>);

impl Rings {
    /// A ring for every possible CPU; the reason in one line if FUSE over io_uring cannot be
    /// used here.
    pub fn create() -> Result<Rings, String> {
        match std::fs::read_to_string(ENABLE_PARAMETER) {
            Ok(value) if value.trim() == "Y" || value.trim() == "1" => {}
            Ok(value) => return Err(format!("{ENABLE_PARAMETER} is {}", value.trim())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "the kernel has no FUSE over io_uring (no {ENABLE_PARAMETER}; it needs \
                     Linux 6.14+ with CONFIG_FUSE_IO_URING)"
                ));
            }
            Err(e) => return Err(format!("{ENABLE_PARAMETER}: {e}")),
        }
        let queues = possible_cpus().map_err(|e| format!("possible CPUs: {e}"))?;
        let rings = (0..queues)
            .map(|_| QueueRing::new(DEPTH as u32))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| format!("io_uring: {e}"))?;
        Ok(Rings(rings))
    }

    /// How many queues (one per possible CPU).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why the queues did not start.
#[derive(Debug)]
pub enum StartError {
    /// The kernel refused a registration: it serves the connection through `/dev/fuse`.
    Refused(io::Error),
    /// A queue could not register at all: requests would wait for it forever, so the
    /// mount must go.
    Failed(io::Error),
}

/// The running queue threads.
#[derive(Debug)]
pub struct Queues {
    threads: Vec<JoinHandle<()>>,
}

impl Queues {
    /// Starts a thread per ring, registers its entries with the connection `device` and
    /// serves it with `server`. Returns once every queue has registered.
    pub fn start(
        rings: Rings,
        server: &Arc<Server>,
        device: &Arc<OwnedFd>,
    ) -> Result<Queues, StartError> {
        let (started, registrations) = mpsc::channel();
        let mut threads = Vec::new();
        for (qid, ring) in rings.0.into_iter().enumerate() {
            let (server, device, started) = (server.clone(), device.clone(), started.clone());
            let thread = std::thread::Builder::new()
                .name(format!("lazycfs-ring-{qid}"))
                .spawn(move || serve_queue(&server, ring, &device, qid as u16, &started))
                .map_err(StartError::Failed)?;
            threads.push(thread);
        }
        drop(started);
        let mut outcome = Ok(());
        for _ in 0..threads.len() {
            match registrations.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => outcome = outcome.and(Err(e)),
                Err(_) => {
                    let e = io::Error::other("a queue thread ended while registering");
                    outcome = outcome.and(Err(StartError::Failed(e)));
                }
            }
        }
        outcome.map(|()| Queues { threads })
    }

    /// Waits for the queue threads, which end with the connection.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A queue thread: registers, then answers requests until the connection ends.
fn serve_queue(
    server: &Server,
    mut ring: QueueRing,
    device: &OwnedFd,
    qid: u16,
    started: &mpsc::Sender<Result<(), StartError>>,
) {
    let mut cpus = rustix::thread::CpuSet::new();
    cpus.set(usize::from(qid));
    if let Err(e) = rustix::thread::sched_setaffinity(None, &cpus) {
        log::debug!("queue {qid}: cannot pin to CPU {qid}: {e}");
    }
    let mut events = match ring.register(device.as_fd(), qid, DEPTH, payload_len()) {
        Ok(events) => {
            let _ = started.send(Ok(()));
            events
        }
        Err(RegisterError::Refused(e)) => {
            let _ = started.send(Err(StartError::Refused(e.into())));
            return;
        }
        Err(RegisterError::Io(e)) => {
            let _ = started.send(Err(StartError::Failed(e)));
            return;
        }
    };
    let stats = server.core().stats();
    loop {
        for event in events.drain(..) {
            match event {
                Event::Request(n) => {
                    let Some((header, payload)) = ring.request(n) else {
                        continue;
                    };
                    stats.uring_received.fetch_add(1, Ordering::Relaxed);
                    let commit_id = dispatch::answer(server, header, payload);
                    if let Err(e) = ring.commit(n, commit_id) {
                        log::warn!("queue {qid}: cannot answer a request: {e}");
                        return;
                    }
                    stats.uring_answered.fetch_add(1, Ordering::Relaxed);
                }
                Event::Ended(_, Errno::NOTCONN | Errno::CONNABORTED) => {}
                Event::Ended(n, e) => log::warn!("queue {qid}: entry {n} ended: {e}"),
            }
        }
        if !ring.is_live() {
            log::debug!("queue {qid}: connection ended");
            return;
        }
        if let Err(e) = ring.submit_and_wait() {
            log::warn!("queue {qid}: io_uring: {e}");
            return;
        }
        ring.completions(&mut events);
    }
}

/// How many CPUs the system may ever have (`/sys/devices/system/cpu/possible`, e.g.
/// `0-3,8-11`): the kernel makes that many queues and needs each one registered.
fn possible_cpus() -> io::Result<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(list.trim()).ok_or_else(|| io::Error::other(format!("bad CPU list {list:?}")))
}

fn parse_cpu_list(list: &str) -> Option<usize> {
    list.split(',').try_fold(0, |count, range| {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => (range.parse().ok()?, range.parse().ok()?),
        };
        Some(count + last.checked_sub(first)? + 1)
    })
}
