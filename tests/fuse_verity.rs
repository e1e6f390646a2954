//! fs-verity: `--verity require` serves an object only when its fs-verity digest equals the
//! digest in the file's metacopy xattr (EIO otherwise, for that file only), and `--digest`
//! refuses an image whose own digest differs. Objects live on a verity-enabled ext4 image.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures, kernel};
use lazycfs::erofs::Image;
use lazycfs::mount::ServeOptions;

/// A loop-mounted ext4 filesystem with the verity feature, unmounted on drop.
struct VerityFs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl VerityFs {
    fn new() -> Option<VerityFs> {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("ext4.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-O", "verity", "-b", "4096"])
            .arg(&img)
            .status()
            .ok()?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .status()
            .ok()?;
        (mkfs.success() && mount.success()).then_some(VerityFs { _dir: dir, mnt })
    }
}

impl Drop for VerityFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Enables fs-verity on `path` and returns its SHA-256 digest.
fn enable_verity(path: &Path) -> [u8; 32] {
    run("fsverity", &["enable".as_ref(), path.as_os_str()]);
    let out = run("fsverity", &["measure".as_ref(), path.as_os_str()]);
    let hex = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("sha256:");
    let mut digest = [0; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    digest
}

fn metacopy(digest: &[u8; 32]) -> Vec<u8> {
    [&[0u8, 36, 0, 1][..], digest].concat()
}

fn redirected(src: &Path, name: &str, object: &str, metacopy: &[u8], size: u64) {
    let path = src.join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let set = |n: &str, v: &[u8]| {
        rustix::fs::lsetxattr(&path, n, v, rustix::fs::XattrFlags::empty()).unwrap()
    };
    set("trusted.overlay.metacopy", metacopy);
    set("trusted.overlay.redirect", format!("/{object}").as_bytes());
}

/// Whether fs-verity can be enabled on a file in `dir` (the kernel may lack CONFIG_FS_VERITY).
fn verity_supported(dir: &Path) -> bool {
    let probe = dir.join(".verity-probe");
    std::fs::write(&probe, b"probe").unwrap();
    let ok = Command::new("fsverity")
        .arg("enable")
        .arg(&probe)
        .output()
        .is_ok_and(|o| o.status.success());
    std::fs::remove_file(&probe).unwrap();
    ok
}

#[test]
fn verity_require_refuses_tampered_objects() {
    let test = "verity_require_refuses_tampered_objects";
    if !kernel::require_root(test) || !fixtures::require_mkfs(test) {
        return;
    }
    if Command::new("fsverity").arg("--version").output().is_err() {
        common::skip(test, "fsverity tool missing (package fsverity)");
        return;
    }
    let Some(fs) = VerityFs::new() else {
        common::skip(
            test,
            "cannot create an ext4 filesystem with the verity feature",
        );
        return;
    };
    if !verity_supported(&fs.mnt) {
        // Not skipped: without kernel fs-verity, `--verity require` must refuse every object.
        eprintln!("{test}: kernel has no fs-verity; checking that required verity fails closed");
        fails_closed_without_kernel_verity(&fs.mnt);
        return;
    }
    let objects = fs.mnt.join("objects");
    std::fs::create_dir_all(objects.join("ab")).unwrap();
    std::fs::write(objects.join("ab/good"), b"good object").unwrap();
    std::fs::write(objects.join("ab/tampered"), b"tampered!!!").unwrap();
    std::fs::write(objects.join("ab/plain"), b"no verity!!").unwrap();
    let good = enable_verity(&objects.join("ab/good"));
    enable_verity(&objects.join("ab/tampered"));

    let src = fs.mnt.join("src");
    std::fs::create_dir(&src).unwrap();
    redirected(&src, "good", "ab/good", &metacopy(&good), 11);
    redirected(&src, "tampered", "ab/tampered", &metacopy(&good), 11);
    redirected(
        &src,
        "no-verity-on-object",
        "ab/plain",
        &metacopy(&good),
        11,
    );
    redirected(&src, "no-digest-in-image", "ab/good", b"", 11);
    let image = fs.mnt.join("image.erofs");
    fixtures::mkfs_erofs(&src, &image, &[]).unwrap();

    let mnt = fs.mnt.join("lazy");
    std::fs::create_dir(&mnt).unwrap();
    let serve = |verity: bool| {
        let options = ServeOptions::new()
            .basedir(&objects)
            .threads(2)
            .require_verity(verity);
        lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &options).unwrap()
    };

    let mounted = serve(true);
    assert_eq!(std::fs::read(mnt.join("good")).unwrap(), b"good object");
    for name in ["tampered", "no-verity-on-object", "no-digest-in-image"] {
        let err = std::fs::read(mnt.join(name)).expect_err(name);
        assert_eq!(err.raw_os_error(), Some(5), "{name}: {err}");
    }
    mounted.unmount().unwrap();

    // Without verity checks every object is served.
    let mounted = serve(false);
    assert_eq!(std::fs::read(mnt.join("tampered")).unwrap(), b"tampered!!!");
    mounted.unmount().unwrap();

    // --digest: the image's own fs-verity digest must match.
    let image_digest: String = enable_verity(&image)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let bin = env!("CARGO_BIN_EXE_lazycfs");
    let mount_with = |digest: &str| {
        Command::new(bin)
            .args(["mount", "--mode", "direct"])
            .arg(&image)
            .arg(&mnt)
            .arg("--basedir")
            .arg(&objects)
            .args(["--digest", digest])
            .output()
            .unwrap()
    };
    let wrong = mount_with(&"0".repeat(64));
    assert_eq!(
        wrong.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("differs"));
    let right = mount_with(&image_digest);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert_eq!(std::fs::read(mnt.join("good")).unwrap(), b"good object");
    lazycfs::mount::unmount(&mnt).unwrap();
}

/// On a kernel without fs-verity, `--verity require` gives EIO for every object (nothing can
/// be verified), objects are served without it, and `--digest` refuses to mount (exit 2).
fn fails_closed_without_kernel_verity(dir: &Path) {
    let objects = dir.join("objects");
    std::fs::create_dir_all(objects.join("ab")).unwrap();
    std::fs::write(objects.join("ab/good"), b"good object").unwrap();
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    redirected(&src, "good", "ab/good", &metacopy(&[7; 32]), 11);
    let image = dir.join("image.erofs");
    fixtures::mkfs_erofs(&src, &image, &[]).unwrap();
    let mnt = dir.join("lazy");
    std::fs::create_dir(&mnt).unwrap();
    for require in [true, false] {
        let options = ServeOptions::new()
            .basedir(&objects)
            .threads(2)
            .require_verity(require);
        let mounted = lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &options).unwrap();
        let read = std::fs::read(mnt.join("good"));
        if require {
            assert_eq!(read.unwrap_err().raw_os_error(), Some(5));
        } else {
            assert_eq!(read.unwrap(), b"good object");
        }
        mounted.unmount().unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lazycfs"))
        .args(["mount", "--mode", "direct"])
        .arg(&image)
        .arg(&mnt)
        .args(["--digest", &"0".repeat(64)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("fs-verity"));
}
