//! The command-line contract: exit statuses and one-line errors.

mod common;

use std::process::Command;

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
    if !common::kernel::require_root("sigterm_unmounts_a_foreground_mount_cleanly") {
        return;
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let image = kinds_image(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_lazycfs"))
        .args(["mount", "--foreground", "--mode", "direct"])
        .arg(&image)
        .arg(&mnt)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "lazycfs: ready");
    assert_eq!(std::fs::read(mnt.join("dash")).unwrap(), b"-");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&server),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(server.wait().unwrap().success());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(mnt.to_str().unwrap()),
        "still mounted after SIGTERM"
    );
}
