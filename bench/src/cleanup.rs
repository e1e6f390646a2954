//! Never leave a mount or a server behind: the servers started are tracked, and on SIGINT or
//! SIGTERM (or at startup, after a crashed run) everything mounted under the work directory is
//! detached and the servers killed. System state the benchmark changes (a kernel module
//! parameter, a tracing instance) is put back at the end, on errors and on signals too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use rustix::mount::{UnmountFlags, unmount};
use rustix::process::{Pid, Signal, kill_process};

static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
/// Held while a server is spawned or a mount made, and by the signal handler from its start
/// to the exit: nothing is started or mounted behind its back. True once interrupted.
static STARTING: Mutex<bool> = Mutex::new(false);
/// Module parameters changed, with the value each had before the run.
static PARAMETERS: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
/// Undoes the request tracer's setup (removes its tracefs instance, unmounts tracefs if the
/// benchmark mounted it).
static TRACING: Mutex<Option<Box<dyn FnOnce() + Send>>> = Mutex::new(None);

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

/// Whether `pid` has exited (or is a zombie: it can no longer mount anything).
fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')').next().is_some_and(|s| s.starts_with(" Z"))
    })
}

/// Runs `start` (spawning a server, mounting) unless the run was interrupted, so that the
/// signal handler never misses what it starts.
pub fn starting<T>(start: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let interrupted = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    anyhow::ensure!(!*interrupted, "interrupted");
    start()
}

/// On SIGINT/SIGTERM: kill the servers, detach the mounts under `work`, restore the system,
/// exit 130.
pub fn install_handler(work: &Path) -> anyhow::Result<()> {
    let work = work.to_path_buf();
    ctrlc::set_handler(move || {
        eprintln!("bench: interrupted, cleaning up");
        let mut interrupted = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        *interrupted = true;
        let children: Vec<u32> = CHILDREN.lock().unwrap().iter().copied().collect();
        for &pid in &children {
            kill(pid);
        }
        // A server dying mid-mount may still complete it: wait before detaching.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !children.iter().all(|&pid| is_gone(pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        unmount_all_under(&work);
        restore_system();
        std::process::exit(130);
    })?;
    Ok(())
}

/// Sets a module parameter (`/sys/module/M/parameters/P`), remembering its first value.
pub fn set_parameter(path: &Path, value: &str) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let current = current.trim();
    let mut saved = PARAMETERS.lock().unwrap();
    if current == value {
        return Ok(());
    }
    if !saved.iter().any(|(p, _)| p == path) {
        saved.push((path.to_path_buf(), current.to_string()));
    }
    std::fs::write(path, value).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Puts a module parameter back to its value before the run, if it was changed.
pub fn restore_parameter(path: &Path) {
    let mut saved = PARAMETERS.lock().unwrap();
    if let Some(i) = saved.iter().position(|(p, _)| p == path) {
        let (path, value) = saved.remove(i);
        if let Err(e) = std::fs::write(&path, &value) {
            eprintln!("bench: restoring {} to {value}: {e}", path.display());
        }
    }
}

/// Registers how to undo the tracing setup (replacing what was registered).
pub fn on_restore_tracing(undo: Box<dyn FnOnce() + Send>) {
    *TRACING.lock().unwrap() = Some(undo);
}

/// Undoes the tracing setup, if not done yet.
pub fn restore_tracing() {
    let undo = TRACING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(undo) = undo {
        undo();
    }
}

/// Restores every module parameter and the tracing state the run changed.
pub fn restore_system() {
    let saved: Vec<PathBuf> = PARAMETERS
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    for path in saved {
        restore_parameter(&path);
    }
    restore_tracing();
}

/// Restores the system state when dropped (the end of `main`, an error, a panic).
pub struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        restore_system();
    }
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
