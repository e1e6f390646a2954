//! Never leave a mount or a server behind: the servers started are tracked, and on SIGINT or
//! SIGTERM (or at startup, after a crashed run) everything mounted under the work directory is
//! detached and the servers killed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use rustix::mount::{UnmountFlags, unmount};
use rustix::process::{Pid, Signal, kill_process};

static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

pub fn register_child(pid: u32) {
    CHILDREN.lock().unwrap().insert(pid);
}

pub fn unregister_child(pid: u32) {
    CHILDREN.lock().unwrap().remove(&pid);
}

fn kill(pid: u32) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// On SIGINT/SIGTERM: detach the mounts under `work`, kill the servers, exit 130.
pub fn install_handler(work: &Path) -> anyhow::Result<()> {
    let work = work.to_path_buf();
    ctrlc::set_handler(move || {
        eprintln!("bench: interrupted, cleaning up");
        unmount_all_under(&work);
        for &pid in CHILDREN.lock().unwrap().iter() {
            kill(pid);
        }
        std::process::exit(130);
    })?;
    Ok(())
}

/// Mount points in /proc/self/mountinfo, in mount order.
fn mountpoints() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .collect()
}

pub fn is_mountpoint(path: &Path) -> bool {
    mountpoints().iter().any(|m| m == path)
}

/// Detaches every mount under `dir`, latest first.
pub fn unmount_all_under(dir: &Path) {
    for mountpoint in mountpoints().iter().rev().filter(|m| m.starts_with(dir)) {
        if let Err(e) = unmount(mountpoint, UnmountFlags::DETACH) {
            eprintln!("bench: unmounting {}: {e}", mountpoint.display());
        }
    }
}

/// Kills a process unless dropped before `timeout`: ends a request its server never answers.
pub struct Watchdog {
    /// Dropping it disconnects the channel: the watchdog thread then ends quietly.
    _cancel: Sender<()>,
}

impl Watchdog {
    pub fn new(pid: u32, timeout: Duration) -> Self {
        let (cancel, cancelled) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(timeout) {
                eprintln!("bench: watchdog: killing server {pid} after {timeout:?}");
                kill(pid);
            }
        });
        Watchdog { _cancel: cancel }
    }
}
