//! The io_uring of one FUSE queue and the buffers the kernel writes requests into.
//!
//! Each ring entry is a header buffer (`struct fuse_uring_req_header`) and a payload buffer,
//! registered with the kernel by address (`FUSE_IO_URING_CMD_REGISTER`). The kernel keeps those
//! addresses and writes the next request into them whenever the entry's command is pending,
//! from the queue thread's task work, at any time that thread returns to user space. So the
//! buffers are raw allocations owned here, and a Rust reference to an entry's buffers exists
//! only while the entry is the server's: between the completion that delivered its request and
//! the `COMMIT_AND_FETCH` that hands it back ([`QueueRing::request`], [`QueueRing::commit`]).
//! The buffers are freed only once no command of theirs is pending; otherwise they are leaked.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use io_uring::{IoUring, cqueue, opcode, squeue::Entry128, types};
use rustix::io::Errno;

/// Size of `struct fuse_uring_req_header`: `in_out` (128), `op_in` (128), `ring_ent_in_out` (32).
pub(crate) const HEADER_SIZE: usize = 288;
const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;
/// The registered file index of the FUSE device.
const DEVICE: types::Fixed = types::Fixed(0);
/// Byte offset of `len` in `struct io_uring_sqe`.
const SQE_LEN_OFFSET: usize = 24;

/// An entry's header buffer, aligned for the kernel's structs.
#[repr(C, align(8))]
pub(crate) struct HeaderBuf(pub(crate) [u8; HEADER_SIZE]);

/// `struct iovec`.
#[repr(C)]
struct Iovec {
    base: *mut u8,
    len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A command of the entry is pending: the kernel may write its buffers.
    Kernel { registering: bool },
    /// Its request is the server's to answer.
    Server,
    /// Its command failed (the connection ended): the kernel no longer knows the buffers.
    Ended,
}

struct Slot {
    header: NonNull<HeaderBuf>,
    payload: NonNull<[u8]>,
    /// Header and payload, as REGISTER passes them (read by the kernel when it handles the
    /// command, which may be after the submission returns).
    iov: [Iovec; 2],
    state: State,
    commit_id: u64,
    /// Its last command came back unhandled (`EAGAIN`, `EINTR`): to send again.
    retry: bool,
}

/// What a completion says about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Entry `n` holds a request: read it with [`QueueRing::request`].
    Request(usize),
    /// Entry `n`'s command failed with this error: the entry is gone (at unmount,
    /// `ENOTCONN`/`ECONNABORTED`).
    Ended(usize, Errno),
}

/// Why [`QueueRing::register`] failed.
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// The kernel refused the registration (and fell back to `/dev/fuse`).
    Refused(Errno),
    /// The ring could not send it.
    Io(io::Error),
}

/// The io_uring of one FUSE queue with its entries.
pub(crate) struct QueueRing {
    ring: IoUring<Entry128, cqueue::Entry>,
    qid: u16,
    slots: Box<[Slot]>,
}

// SAFETY: the raw pointers in `slots` are owned allocations (no thread-local state); the ring
// and its buffers move to the queue thread as a whole.
unsafe impl Send for QueueRing {}

impl QueueRing {
    /// A ring with room for `depth` entries (128-byte SQEs, as FUSE commands need). Creating it
    /// is how a caller learns whether io_uring is usable at all.
    pub(crate) fn new(depth: u32) -> io::Result<QueueRing> {
        let ring = IoUring::<Entry128, cqueue::Entry>::builder()
            .setup_cqsize(depth * 2)
            .build(depth)?;
        Ok(QueueRing {
            ring,
            qid: 0,
            slots: Box::new([]),
        })
    }

    /// Registers `depth` entries of `payload_len` bytes for queue `qid` of the FUSE connection
    /// `device`. Returns the completions that already arrived. If the kernel refuses an entry,
    /// it serves the connection through `/dev/fuse` from then on.
    pub(crate) fn register(
        &mut self,
        device: BorrowedFd<'_>,
        qid: u16,
        depth: usize,
        payload_len: usize,
    ) -> Result<Vec<Event>, RegisterError> {
        self.ring
            .submitter()
            .register_files(&[device.as_raw_fd()])
            .map_err(RegisterError::Io)?;
        self.qid = qid;
        self.slots = (0..depth).map(|_| Slot::new(payload_len)).collect();
        for n in 0..depth {
            self.push_register(n).map_err(RegisterError::Io)?;
        }
        self.ring.submit().map_err(RegisterError::Io)?;
        let mut events = Vec::new();
        self.completions(&mut events);
        match events.iter().find_map(|e| match e {
            Event::Ended(_, e) => Some(*e),
            Event::Request(_) => None,
        }) {
            Some(e) => Err(RegisterError::Refused(e)),
            None => Ok(events),
        }
    }

    /// Submits what is queued and waits for at least one completion.
    pub(crate) fn submit_and_wait(&mut self) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => Ok(()),
            // A signal, or a full completion queue: the caller drains it and comes back.
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::INTR | Errno::BUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Appends the events of the completions that arrived to `events`. Commands interrupted
    /// before the kernel took them (`EAGAIN`, `EINTR`) are queued again.
    pub(crate) fn completions(&mut self, events: &mut Vec<Event>) {
        let mut retry = false;
        for cqe in self.ring.completion() {
            let n = cqe.user_data() as usize;
            let Some(slot) = self.slots.get_mut(n) else {
                continue;
            };
            match cqe.result() {
                0 => {
                    slot.state = State::Server;
                    events.push(Event::Request(n));
                }
                e if e == -Errno::AGAIN.raw_os_error() || e == -Errno::INTR.raw_os_error() => {
                    slot.retry = true;
                    retry = true;
                }
                e => {
                    slot.state = State::Ended;
                    events.push(Event::Ended(n, Errno::from_raw_os_error(-e)));
                }
            }
        }
        for n in 0..self.slots.len() {
            if !retry || !self.slots[n].retry {
                continue;
            }
            self.slots[n].retry = false;
            let pushed = match self.slots[n].state {
                State::Kernel { registering: true } => self.push_register(n),
                State::Kernel { registering: false } => self.push_commit(n),
                _ => Ok(()),
            };
            if let Err(e) = pushed {
                self.slots[n].state = State::Ended;
                events.push(Event::Ended(
                    n,
                    Errno::from_io_error(&e).unwrap_or(Errno::IO),
                ));
            }
        }
    }

    /// The header and payload of entry `n`, while its request is the server's.
    pub(crate) fn request(&mut self, n: usize) -> Option<(&mut HeaderBuf, &mut [u8])> {
        let slot = self.slots.get_mut(n)?;
        if slot.state != State::Server {
            return None;
        }
        // SAFETY: the entry is the server's (its completion arrived and no command of it is
        // pending), so the kernel neither reads nor writes its buffers until `commit`, which
        // needs `&mut self` and so ends these borrows first. The pointers come from boxes
        // this slot owns.
        unsafe { Some((slot.header.as_mut(), slot.payload.as_mut())) }
    }

    /// Hands entry `n` back to the kernel with the answer written into its buffers
    /// (`COMMIT_AND_FETCH`; submitted by the next [`submit_and_wait`](Self::submit_and_wait)).
    pub(crate) fn commit(&mut self, n: usize, commit_id: u64) -> io::Result<()> {
        match self.slots.get_mut(n) {
            Some(slot) if slot.state == State::Server => slot.commit_id = commit_id,
            _ => return Err(io::Error::from(Errno::INVAL)),
        }
        self.push_commit(n)
    }

    /// Whether any entry is still registered.
    pub(crate) fn is_live(&self) -> bool {
        self.slots.iter().any(|s| s.state != State::Ended)
    }

    fn push_register(&mut self, n: usize) -> io::Result<()> {
        let slot = &mut self.slots[n];
        slot.state = State::Kernel { registering: true };
        let sqe = opcode::UringCmd80::new(DEVICE, FUSE_IO_URING_CMD_REGISTER)
            .cmd(command(self.qid, 0))
            .addr(Some(slot.iov.as_ptr() as u64))
            .build()
            .user_data(n as u64);
        self.push(with_len(sqe, 2))
    }

    fn push_commit(&mut self, n: usize) -> io::Result<()> {
        let slot = &mut self.slots[n];
        slot.state = State::Kernel { registering: false };
        let sqe = opcode::UringCmd80::new(DEVICE, FUSE_IO_URING_CMD_COMMIT_AND_FETCH)
            .cmd(command(self.qid, slot.commit_id))
            .build()
            .user_data(n as u64);
        self.push(sqe)
    }

    fn push(&mut self, sqe: Entry128) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: the command points at this ring's slots (the iovec array, and through it
            // the buffers), which stay allocated while any command is pending (see `Drop`).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue full"))
    }
}

impl Slot {
    fn new(payload_len: usize) -> Slot {
        let header = NonNull::from(Box::leak(Box::new(HeaderBuf([0; HEADER_SIZE]))));
        let mut payload = NonNull::from(Box::leak(vec![0u8; payload_len].into_boxed_slice()));
        let iov = [
            Iovec {
                base: header.as_ptr().cast(),
                len: HEADER_SIZE,
            },
            Iovec {
                // SAFETY: a pointer to the first byte of the slice just allocated.
                base: unsafe { payload.as_mut() }.as_mut_ptr(),
                len: payload_len,
            },
        ];
        Slot {
            header,
            payload,
            iov,
            state: State::Ended,
            commit_id: 0,
            retry: false,
        }
    }
}

impl Drop for QueueRing {
    fn drop(&mut self) {
        if self
            .slots
            .iter()
            .any(|s| matches!(s.state, State::Kernel { .. }))
        {
            // The kernel may still write into them: leaked, never reused.
            log::debug!("queue {}: ring ends with commands pending", self.qid);
            return;
        }
        for slot in self.slots.iter() {
            // SAFETY: both come from `Box::leak` in `Slot::new`, and no command refers to them
            // any more (every entry's last command completed).
            unsafe {
                drop(Box::from_raw(slot.header.as_ptr()));
                drop(Box::from_raw(slot.payload.as_ptr()));
            }
        }
    }
}

/// `struct fuse_uring_cmd_req` in the SQE's 80-byte command area: flags, commit id, queue.
fn command(qid: u16, commit_id: u64) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// `sqe` with its `len` field set: REGISTER passes an iovec array of two, and io-uring 0.7's
/// `UringCmd80` has no setter for it.
fn with_len(sqe: Entry128, len: u32) -> Entry128 {
    // SAFETY: `Entry128` is `repr(C)`: a `struct io_uring_sqe` (plain integers and unions of
    // them) followed by 64 command bytes, 128 bytes with no padding, so every bit pattern is
    // a valid value and its bytes are initialized. `len` is the `u32` at byte 24 of the SQE.
    unsafe {
        let mut bytes: [u8; 128] = std::mem::transmute(sqe);
        bytes[SQE_LEN_OFFSET..SQE_LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_commands_carry_the_iovec_count() {
        let sqe = opcode::UringCmd80::new(DEVICE, FUSE_IO_URING_CMD_REGISTER)
            .addr(Some(0x1000))
            .build();
        // SAFETY: as in `with_len`.
        let bytes: [u8; 128] = unsafe { std::mem::transmute(with_len(sqe, 2)) };
        assert_eq!(
            &bytes[SQE_LEN_OFFSET..SQE_LEN_OFFSET + 4],
            &2u32.to_ne_bytes()
        );
        assert_eq!(
            &bytes[16..24],
            &0x1000u64.to_ne_bytes(),
            "addr is untouched"
        );
    }

    #[test]
    fn commands_name_queue_and_commit_id() {
        let cmd = command(3, 0x0102_0304_0506_0708);
        assert_eq!(&cmd[..8], &[0; 8]);
        assert_eq!(&cmd[8..16], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&cmd[16..18], &3u16.to_ne_bytes());
        assert!(cmd[18..].iter().all(|&b| b == 0));
    }
}
