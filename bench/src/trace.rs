//! FUSE requests counted from the kernel's `fuse:fuse_request_send` tracepoint (kernel 6.16+).
//!
//! The tracer works in a tracefs instance of its own (`instances/lazycfs-bench-PID`), so the
//! global tracing state is never touched; removing the instance at the end (or on a signal)
//! restores everything. The instance records only the benchmark process and its descendants
//! (`set_event_pid` + `event-fork`): the workload commands and the servers, not the FUSE mounts
//! of anything else running on the machine. Requests the kernel sends from its own threads on
//! the workload's behalf are not counted.
//!
//! Counting is a separate, untimed pass: the timed runs never have the tracepoint enabled.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use crate::cleanup;

/// Requests per opcode (`LOOKUP`, `GETATTR`, …).
pub type Requests = BTreeMap<String, u64>;

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENT: &str = "events/fuse/fuse_request_send";
/// Per-CPU ring buffer of the instance; drained every few milliseconds while a command runs.
const BUFFER_KB: &str = "8192";

/// A tracefs instance recording `fuse_request_send` for this process tree.
pub struct RequestTracer {
    instance: PathBuf,
}

impl RequestTracer {
    /// Sets up the instance (mounting tracefs if it is not mounted), with the event disabled.
    pub fn new() -> anyhow::Result<Self> {
        let tracefs = Path::new(TRACEFS);
        let mut mounted = false;
        if !tracefs.join("instances").is_dir() {
            mount("nodev", tracefs, "tracefs", MountFlags::empty(), None)
                .with_context(|| format!("mount -t tracefs nodev {TRACEFS}"))?;
            mounted = true;
        }
        let instance = tracefs
            .join("instances")
            .join(format!("lazycfs-bench-{}", std::process::id()));
        let undo = {
            let instance = instance.clone();
            move || {
                // Busy while the main thread still reads its trace_pipe (on a signal).
                let deadline = Instant::now() + Duration::from_secs(2);
                while fs::remove_dir(&instance).is_err_and(|e| {
                    e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
                }) && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if mounted {
                    let _ = unmount(TRACEFS, UnmountFlags::DETACH);
                }
            }
        };
        cleanup::on_restore_tracing(Box::new(undo));
        if !tracefs.join(EVENT).is_dir() {
            cleanup::restore_tracing();
            bail!("this kernel has no {EVENT} tracepoint (6.16+)");
        }
        remove_stale_instances(&tracefs.join("instances"));
        if let Err(e) = fs::create_dir(&instance) {
            cleanup::restore_tracing();
            return Err(e).with_context(|| format!("creating {}", instance.display()));
        }
        let tracer = RequestTracer { instance };
        tracer.write("buffer_size_kb", BUFFER_KB)?;
        tracer.write("options/event-fork", "1")?;
        tracer.write("set_event_pid", &std::process::id().to_string())?;
        Ok(tracer)
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        let path = self.instance.join(file);
        fs::write(&path, value).with_context(|| format!("writing {value} to {}", path.display()))
    }

    /// Events lost so far (ring buffer overruns and drops), over all CPUs.
    fn lost(&self) -> u64 {
        let Ok(cpus) = fs::read_dir(self.instance.join("per_cpu")) else {
            return 0;
        };
        cpus.filter_map(|cpu| fs::read_to_string(cpu.ok()?.path().join("stats")).ok())
            .flat_map(|stats| {
                stats
                    .lines()
                    .filter(|l| l.starts_with("overrun:") || l.starts_with("dropped events:"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Runs `cmd` (stdout to /dev/null, stderr to `errors`) within `timeout` and counts the
    /// FUSE requests it caused. Fails on a non-zero exit or lost events.
    pub fn count(
        &self,
        mut cmd: Command,
        errors: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Requests> {
        let mut pipe = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(self.instance.join("trace_pipe"))?;
        let lost_before = self.lost();
        let mut counter = Counter::default();
        self.write(&format!("{EVENT}/enable"), "1")?;
        // What the mount's readiness probe sent is not the workload's.
        counter.drain(&mut pipe)?;
        counter.requests.clear();

        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(errors)?);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let start = Instant::now();
        let result = (|| {
            let mut child = cmd.spawn().with_context(|| format!("running {program}"))?;
            let status = loop {
                counter.drain(&mut pipe)?;
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if start.elapsed() > timeout {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("{program}: timeout after {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            counter.drain(&mut pipe)?;
            ensure!(status.success(), "{program}: {status}");
            Ok(())
        })();
        self.write(&format!("{EVENT}/enable"), "0")?;
        result?;
        let lost = self.lost() - lost_before;
        ensure!(lost == 0, "{lost} trace events lost (ring buffer full)");
        ensure!(counter.partial.is_empty(), "truncated trace line");
        Ok(counter.requests)
    }
}

/// Removes the instances of benchmark runs that were killed before they could.
fn remove_stale_instances(instances: &Path) {
    let Ok(entries) = fs::read_dir(instances) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("lazycfs-bench-")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

impl Drop for RequestTracer {
    fn drop(&mut self) {
        let _ = self.write(&format!("{EVENT}/enable"), "0");
        cleanup::restore_tracing();
    }
}

/// Trace lines parsed into counts per opcode.
#[derive(Default)]
struct Counter {
    requests: Requests,
    /// The end of the last read, up to its last newline.
    partial: Vec<u8>,
}

impl Counter {
    /// Reads whatever the trace pipe holds now.
    fn drain(&mut self, pipe: &mut File) -> anyhow::Result<()> {
        let mut buf = [0u8; 1 << 16];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.feed(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading trace_pipe"),
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let lines: Vec<u8> = self.partial.drain(..=end).collect();
        for line in String::from_utf8_lossy(&lines).lines() {
            if let Some(opcode) = opcode_name(line) {
                *self.requests.entry(opcode.to_string()).or_default() += 1;
            }
        }
    }
}

/// `LOOKUP` from `… fuse_request_send: connection 40 req 2 opcode 1 (FUSE_LOOKUP) len 50`.
fn opcode_name(line: &str) -> Option<&str> {
    let rest = &line[line.find(" opcode ")? + " opcode ".len()..];
    let name = &rest[rest.find('(')? + 1..rest.find(')')?];
    Some(name.strip_prefix("FUSE_").unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_lines() {
        let mut counter = Counter::default();
        counter.feed(
            b"find-1 [001] ...1. 1.0: fuse_request_send: connection 40 req 2 opcode 1 (FUSE_LOO",
        );
        counter.feed(b"KUP) len 50 \nfind-1 [001] ...1. 1.1: fuse_request_send: connection 40 req 4 opcode 27 (FUSE_OPENDIR) len 48 \n");
        assert_eq!(counter.requests["LOOKUP"], 1);
        assert_eq!(counter.requests["OPENDIR"], 1);
        assert!(counter.partial.is_empty());
    }
}
