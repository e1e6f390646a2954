//! The command-line contract: exit statuses and one-line errors.

mod common;

use std::process::Command;

use common::guard::Guard;

fn lazycfs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lazycfs"))
        .args(args)
        .output()
        .unwrap()
}

/// The composefs V1 fixture image, written into `dir`.
fn kinds_image(dir: &std::path::Path) -> std::path::PathBuf {
    let image = dir.join("ok.cfs");
    std::fs::write(
        &image,
        common::cfs::write_image(include_str!("data/kinds.dump"), 1),
    )
    .unwrap();
    image
}

/// For a test that mounts as root: a directory with the kinds image and an empty `mnt`, or
/// `None` (the test skips) without root.
fn kinds_mount_fixture(
    test: &str,
) -> Option<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)> {
    if !common::kernel::require_root(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = kinds_image(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    Some((dir, image, mnt))
}

/// `lazycfs mount --foreground --mode direct IMAGE MNT [extra]`, once it reports ready; the
/// guard kills the server and detaches `mnt` if the test fails.
fn mount_foreground(image: &std::path::Path, mnt: &std::path::Path, extra: &[&str]) -> Guard {
    use std::io::BufRead;
    let mut server = Command::new(env!("CARGO_BIN_EXE_lazycfs"))
        .args(["mount", "--foreground", "--mode", "direct"])
        .args(extra)
        .arg(image)
        .arg(mnt)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let guard = Guard::process(server).and_mount(mnt);
    let mut ready = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "lazycfs: ready");
    guard
}

/// Sends SIGTERM to a guarded foreground server and waits for it (the guard still detaches
/// its mount point if the server left it behind).
fn sigterm(server: &mut Guard) -> std::process::ExitStatus {
    let mut server = server.take();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&server),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    server.wait().unwrap()
}

#[test]
fn errors_before_mounting_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let image = kinds_image(dir.path());
    let mnt = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["mount", "/nonexistent.cfs", mnt], "No such file"),
        (
            &["mount", junk.to_str().unwrap(), mnt],
            "not an EROFS image",
        ),
        (
            &[
                "mount",
                image.to_str().unwrap(),
                mnt,
                "--basedir",
                "/nonexistent",
            ],
            "basedir",
        ),
        (&["dump", junk.to_str().unwrap()], "bad superblock magic"),
        (&["check", "/nonexistent.cfs"], "No such file"),
    ];
    for (args, message) in cases {
        let out = lazycfs(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn check_and_dump_succeed_on_a_good_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = kinds_image(dir.path());
    let check = lazycfs(&["check", image.to_str().unwrap()]);
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).starts_with("ok: "));
    let dump = lazycfs(&["dump", image.to_str().unwrap()]);
    assert!(dump.status.success());
    assert_eq!(
        String::from_utf8(dump.stdout).unwrap(),
        common::cfs::reference_dump(&std::fs::read(&image).unwrap())
    );
}

#[test]
fn sigterm_unmounts_a_foreground_mount_cleanly() {
    let Some((_dir, image, mnt)) =
        kinds_mount_fixture("sigterm_unmounts_a_foreground_mount_cleanly")
    else {
        return;
    };
    let mut server = mount_foreground(&image, &mnt, &[]);
    assert_eq!(std::fs::read(mnt.join("dash")).unwrap(), b"-");
    assert!(sigterm(&mut server).success());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(mnt.to_str().unwrap()),
        "still mounted after SIGTERM"
    );
}

/// The status flags of the server's `/dev/fuse` descriptor (from `/proc/PID/fdinfo`).
fn fuse_device_flags(pid: u32) -> u32 {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        if std::fs::read_link(fd.path())
            .is_ok_and(|target| target == std::path::Path::new("/dev/fuse"))
        {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .unwrap()
                .trim();
            return u32::from_str_radix(flags, 8).unwrap();
        }
    }
    panic!("server {pid} has no /dev/fuse descriptor");
}

/// The scheduler state (`R`, `S`, `D`, …) of each thread of a process.
fn thread_states(pid: u32) -> Vec<char> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("stat")).ok())
        // The state follows the command name, which may contain spaces.
        .map(|stat| stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap())
        .collect()
}

/// Every thread of the process sleeping, in 20 samples in a row (a polling thread runs).
fn all_threads_asleep(pid: u32) -> bool {
    (0..20).all(|_| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        thread_states(pid)
            .iter()
            .all(|&state| matches!(state, 'S' | 'D'))
    })
}

/// Calls `event` until it returns `Some`, for up to a minute (a bound for a stuck test, not
/// a measurement); `None` if it never did.
fn wait_for<T>(mut event: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(found) = event() {
            return Some(found);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// Busy polling: the device is polled during a burst of requests, blocks again once they
/// stop, and an idle server spends no CPU time; `--no-busy-poll` never polls.
#[test]
fn busy_polling_is_limited_to_bursts() {
    if !common::kernel::require_root("busy_polling_is_limited_to_bursts") {
        return;
    }
    // On one CPU busy polling is off by default: then no run may poll.
    let several_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    const NONBLOCK: u32 = 0o4000;
    let dir = tempfile::tempdir().unwrap();
    let image = kinds_image(dir.path());
    for poll in [true, false] {
        let mnt = dir.path().join(format!("mnt-{poll}"));
        std::fs::create_dir(&mnt).unwrap();
        // Busy polling is /dev/fuse's: io_uring would carry the requests otherwise.
        let flags: &[&str] = if poll {
            &["--transport", "dev"]
        } else {
            &["--transport", "dev", "--no-busy-poll"]
        };
        let mut server = mount_foreground(&image, &mnt, flags);
        let pid = server.id();
        // Bursts: xattr requests are never cached by the kernel, each one reaches the server.
        // Whether a burst is close enough to start polling depends on the machine's load, so
        // bursts go on until the device is polled: up to 5,000 bursts (a million requests)
        // where polling is expected, 250 (50,000 requests, each a chance to start it) where
        // it is not.
        let file = mnt.join("d/inline");
        let expected = poll && several_cpus;
        let bursts = if expected { 5_000 } else { 250 };
        let polled = (0..bursts).any(|_| {
            for _ in 0..200 {
                rustix::fs::lgetxattr_query(&file, "user.foo").ok();
            }
            fuse_device_flags(pid) & NONBLOCK != 0
        });
        assert_eq!(
            polled, expected,
            "device polled during the bursts (busy poll {poll})"
        );
        // Once requests stop, the device blocks again and every server thread sleeps: an idle
        // server spends no CPU.
        let blocked = wait_for(|| (fuse_device_flags(pid) & NONBLOCK == 0).then_some(()));
        assert!(blocked.is_some(), "device blocks again once requests stop");
        let asleep = wait_for(|| all_threads_asleep(pid).then_some(()));
        assert!(asleep.is_some(), "server threads: {:?}", thread_states(pid));
        assert!(sigterm(&mut server).success());
    }
}

const COMMANDS: [&str; 8] = [
    "dump",
    "create",
    "check",
    "mount",
    "run",
    "umount",
    "completions",
    "manpage",
];

#[test]
fn help_and_version_print_on_stdout_and_exit_0() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = lazycfs(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        for command in COMMANDS {
            assert!(help.contains(command), "{args:?} names {command}: {help}");
        }
    }
    // The benchmark harness probes for `mount` this way.
    for args in [&["mount", "--help"][..], &["help", "mount"]] {
        let out = lazycfs(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("--basedir <DIR>"));
    }
    let version = lazycfs(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(version.stdout).unwrap(),
        format!("lazycfs {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_and_point_to_the_help() {
    let cases: [&[&str]; 6] = [
        &[],
        &["frob"],
        &["mount", "image"],
        &["mount", "image", "mnt", "--mode", "fast"],
        &["run", "image", "--basedir", "objects"],
        &["mount", "image", "mnt", "--upper", "upper"],
    ];
    for args in cases {
        let out = lazycfs(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--help"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn completions_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = lazycfs(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("lazycfs"), "{shell}");
        for command in COMMANDS {
            assert!(script.contains(command), "{shell} completes {command}");
        }
        assert!(script.contains("basedir"), "{shell} completes options");
    }
}

/// The pages in `doc/` are what the binary generates: regenerate them with
/// `cargo run -- manpage --dir doc` after changing the command line.
#[test]
fn committed_man_pages_are_current() {
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("doc");
    let generated = tempfile::tempdir().unwrap();
    let out = lazycfs(&["manpage", "--dir", generated.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let pages = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".1"))
            .collect();
        names.sort();
        names
    };
    let stale = "stale: regenerate with `cargo run -- manpage --dir doc`";
    assert_eq!(pages(&committed), pages(generated.path()), "doc/ {stale}");
    for page in pages(generated.path()) {
        assert_eq!(
            std::fs::read_to_string(committed.join(&page)).unwrap(),
            std::fs::read_to_string(generated.path().join(&page)).unwrap(),
            "doc/{page} {stale}"
        );
    }
    let lazycfs_1 = lazycfs(&["manpage"]);
    assert_eq!(lazycfs_1.status.code(), Some(0));
    assert_eq!(
        lazycfs_1.stdout,
        std::fs::read(committed.join("lazycfs.1")).unwrap()
    );
    assert!(
        String::from_utf8(lazycfs_1.stdout)
            .unwrap()
            .contains(".SH SYNOPSIS")
    );
    let mount_1 = lazycfs(&["manpage", "mount"]);
    assert_eq!(
        mount_1.stdout,
        std::fs::read(committed.join("lazycfs-mount.1")).unwrap()
    );
}

/// An image of three files read from two objects (one of them twice, once through a hard
/// link), with `/ab/…` and `cd/…` redirects, and a file stored in the image.
fn objects_image(dir: &std::path::Path) -> std::path::PathBuf {
    let ab = format!("ab/{}", "1".repeat(62));
    let cd = format!("cd/{}", "2".repeat(62));
    let dump = format!(
        "/ 0 40755 2 0 0 0 0.0 - - -\n\
         /one 3 100644 2 0 0 0 0.0 {ab} - ab{}\n\
         /one-link 0 @120000 - - - - 0.0 /one - -\n\
         /same 3 100644 1 0 0 0 0.0 {ab} - ab{}\n\
         /two 3 100644 1 0 0 0 0.0 {cd} - cd{}\n\
         /inline 2 100644 1 0 0 0 0.0 - hi -\n",
        "1".repeat(62),
        "1".repeat(62),
        "2".repeat(62),
    );
    let image = dir.join("objects.cfs");
    std::fs::write(&image, common::cfs::write_image(&dump, 1)).unwrap();
    image
}

#[test]
fn objects_and_missing_list_the_referenced_objects_sorted_once() {
    let dir = tempfile::tempdir().unwrap();
    let image = objects_image(dir.path());
    let image = image.to_str().unwrap();
    let (ab, cd) = (
        format!("ab/{}", "1".repeat(62)),
        format!("cd/{}", "2".repeat(62)),
    );
    let objects = lazycfs(&["objects", image, image]);
    assert!(objects.status.success());
    assert_eq!(
        String::from_utf8(objects.stdout).unwrap(),
        format!("{ab}\n{cd}\n")
    );

    let basedir = dir.path().join("objects");
    std::fs::create_dir_all(basedir.join("ab")).unwrap();
    let basedir_arg = basedir.to_str().unwrap();
    let missing = lazycfs(&["missing", image, "--basedir", basedir_arg]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(missing.stdout).unwrap(),
        format!("{ab}\n{cd}\n")
    );
    std::fs::write(basedir.join(&ab), b"one").unwrap();
    let missing = lazycfs(&["missing", image, "--basedir", basedir_arg]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(missing.stdout).unwrap(),
        format!("{cd}\n")
    );
    // A symlink is not an object: the mount would not follow it.
    std::fs::create_dir(basedir.join("cd")).unwrap();
    std::os::unix::fs::symlink(basedir.join(&ab), basedir.join(&cd)).unwrap();
    let missing = lazycfs(&["missing", image, "--basedir", basedir_arg]);
    assert_eq!(missing.status.code(), Some(1));
    std::fs::remove_file(basedir.join(&cd)).unwrap();
    std::fs::write(basedir.join(&cd), b"two").unwrap();
    let missing = lazycfs(&["missing", image, "--basedir", basedir_arg]);
    assert_eq!(missing.status.code(), Some(0));
    assert!(missing.stdout.is_empty());

    for (args, status) in [
        (vec!["objects", "/nonexistent.cfs"], 2),
        (vec!["missing", image, "--basedir", "/nonexistent"], 2),
        (
            vec!["missing", "/nonexistent.cfs", "--basedir", basedir_arg],
            2,
        ),
    ] {
        let out = lazycfs(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// An image whose root lists `broken`, a file inode with a data layout no EROFS writer knows.
fn corrupt_image(dir: &std::path::Path) -> std::path::PathBuf {
    use common::handmade::{Compact, FT_DIR, FT_REG, Img, S_IFREG};
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, FT_DIR),
            (b"..", 0, FT_DIR),
            (b"broken", 4, FT_REG),
        ],
    );
    let reserved_layout = 7 << 1;
    img.compact(
        4,
        Compact {
            format: reserved_layout,
            mode: S_IFREG | 0o644,
            nb: 1,
            ..Compact::default()
        },
        &[],
    );
    let image = dir.join("corrupt.cfs");
    img.write(&image);
    image
}

#[test]
fn objects_and_missing_name_the_corrupt_inode_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let image = corrupt_image(dir.path());
    let image = image.to_str().unwrap();
    let basedir = dir.path().to_str().unwrap();
    // `objects` lists what it can read: corruption is its failure (1); for `missing`, 1 means
    // "objects are missing", so an image it cannot read is an error (2).
    for (args, status) in [
        (vec!["objects", image], 1),
        (vec!["missing", image, "--basedir", basedir], 2),
    ] {
        let out = lazycfs(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            format!("lazycfs: {image}: /broken (nid 4): corrupt inode 4: reserved data layout 7\n"),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn mounting_with_objects_missing_warns_with_the_count() {
    if !common::kernel::require_root("mounting_with_objects_missing_warns_with_the_count") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = objects_image(dir.path());
    let basedir = dir.path().join("objects");
    std::fs::create_dir_all(basedir.join("ab")).unwrap();
    std::fs::write(basedir.join(format!("ab/{}", "1".repeat(62))), b"one").unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (image, mnt_arg, basedir_arg) = (
        image.to_str().unwrap(),
        mnt.to_str().unwrap(),
        basedir.to_str().unwrap(),
    );
    // Mounts in `mode` with `extra` options, reads a file and unmounts; `mount`'s output.
    let mount_once = |mode: &str, extra: &[&str]| {
        let mut args = vec![
            "mount",
            image,
            mnt_arg,
            "--basedir",
            basedir_arg,
            "--mode",
            mode,
        ];
        args.extend_from_slice(extra);
        let _unmount = Guard::mount(&mnt);
        let out = lazycfs(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{mode} {extra:?}: {stderr}");
        assert_eq!(std::fs::read(mnt.join("one")).unwrap(), b"one", "{mode}");
        assert!(lazycfs(&["umount", mnt_arg]).status.success(), "{mode}");
        stderr
    };
    for mode in ["direct", "overlay", "kernel"] {
        let stderr = mount_once(mode, &[]);
        assert_eq!(stderr.lines().count(), 1, "{mode}: {stderr}");
        assert!(
            stderr.contains("warning: 1 of the 2 objects"),
            "{mode}: {stderr}"
        );
        let quiet = mount_once(mode, &["--no-object-check"]);
        assert!(quiet.is_empty(), "{mode}: {quiet}");
    }
}

/// Runs a shell script as root in a private mount namespace where `lazycfs` (this build) is
/// on the default search path of `/bin/sh`, which `mount.fuse3` runs helpers with
/// (`mount(8)` clears `PATH`). Returns its output; the script's mounts go with the namespace.
fn in_mount_namespace_with_lazycfs(script: &str) -> std::process::Output {
    let setup = format!(
        "set -eu\nmount -t tmpfs lazycfs-bin /usr/local/bin\nln -s {} /usr/local/bin/lazycfs\n",
        env!("CARGO_BIN_EXE_lazycfs")
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(setup + script)
        .output()
        .unwrap()
}

#[test]
fn mount_t_fuse_lazycfs_and_fstab_lines_mount_through_mount_fuse3() {
    let test = "mount_t_fuse_lazycfs_and_fstab_lines_mount_through_mount_fuse3";
    if !common::kernel::require_root(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = objects_image(dir.path());
    let basedir = dir.path().join("objects");
    for (dir, digit, content) in [("ab", "1", "one"), ("cd", "2", "two")] {
        std::fs::create_dir_all(basedir.join(dir)).unwrap();
        std::fs::write(basedir.join(dir).join(digit.repeat(62)), content).unwrap();
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fstab = dir.path().join("fstab");
    let (image, basedir, mnt) = (image.display(), basedir.display(), mnt.display());
    std::fs::write(
        &fstab,
        format!("{image} {mnt} fuse.lazycfs basedir={basedir},mode=overlay,nofail 0 0\n"),
    )
    .unwrap();
    let script = format!(
        "for mode in direct overlay kernel; do
            mount -t fuse.lazycfs {image} {mnt} -o ro,nodev,basedir={basedir},mode=$mode,allow_other
            echo \"$mode $(cat {mnt}/one {mnt}/two) $(grep -c ' {mnt} ' /proc/self/mounts)\"
            umount {mnt}
         done
         mount -T {fstab} {mnt}
         echo \"fstab $(cat {mnt}/same) $(awk '$2 == \"{mnt}\" {{ print $3 }}' /proc/self/mounts)\"
         umount {mnt}
         # The servers end with their mounts.
         servers() {{ pgrep -a -x lazycfs | grep -F {image}; }}
         for _ in $(seq 100); do servers >/dev/null || break; sleep 0.05; done
         if servers; then exit 1; fi
         if mount -t fuse.lazycfs {image} {mnt} -o basedir={basedir},colour=red; then exit 1; fi",
        fstab = fstab.display()
    );
    let out = in_mount_namespace_with_lazycfs(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The kernel mode is an overlay over an EROFS mount that is not attached anywhere.
    assert_eq!(
        stdout, "direct onetwo 1\noverlay onetwo 1\nkernel onetwo 1\nfstab one overlay\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("lazycfs: unknown mount option 'colour=red'"),
        "{stderr}"
    );
}

#[test]
fn readiness_is_notified_to_systemd() {
    let Some((dir, image, mnt)) = kinds_mount_fixture("readiness_is_notified_to_systemd") else {
        return;
    };
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let receive = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };

    // In the foreground the server is the service's process.
    let server = Command::new(env!("CARGO_BIN_EXE_lazycfs"))
        .args(["mount", "--foreground", "--mode", "direct"])
        .arg(&image)
        .arg(&mnt)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Guard::process(server).and_mount(&mnt);
    assert_eq!(receive(), "READY=1\n");
    assert_eq!(std::fs::read(mnt.join("dash")).unwrap(), b"-");
    assert!(sigterm(&mut server).success());

    // A daemon names the server it left running as the main process.
    let out = Command::new(env!("CARGO_BIN_EXE_lazycfs"))
        .args(["mount", "--mode", "direct"])
        .arg(&image)
        .arg(&mnt)
        .env("NOTIFY_SOCKET", &socket_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let message = receive();
    let pid = message
        .strip_prefix("READY=1\nMAINPID=")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{message:?}"));
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "lazycfs");
    assert_eq!(std::fs::read(mnt.join("dash")).unwrap(), b"-");
    assert!(lazycfs(&["umount", mnt.to_str().unwrap()]).status.success());
}
