//! fs-verity: `--verity require` serves an object only when its fs-verity digest equals the
//! digest in the file's metacopy xattr (EIO otherwise, for that file only), and `--digest`
//! refuses an image whose own digest differs. Objects live on a verity-enabled ext4 image when
//! the kernel has fs-verity (else that test checks that required verity fails closed), and on
//! a FUSE filesystem that reports fs-verity digests, which any kernel forwards.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::guard::{Guard, Session};
use common::{fixtures, kernel};
use lazycfs::erofs::Image;
use lazycfs::mount::ServeOptions;

/// A loop-mounted ext4 filesystem with the verity feature, unmounted on drop.
struct VerityFs {
    /// Detaches the loop mount and whatever a failed test left mounted inside it.
    _unmount: Guard,
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
        (mkfs.success() && mount.success()).then_some(VerityFs {
            _unmount: Guard::mount(&mnt),
            _dir: dir,
            mnt,
        })
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

/// An image of four 11-byte files redirected to objects `ab/good`, `ab/tampered` and `ab/plain`:
/// `good`, `tampered` and `no-verity-on-object` with `good_digest` in their metacopy, and
/// `no-digest-in-image` (to `ab/good`) with none.
fn write_verity_image(src: &Path, good_digest: &[u8; 32], image: &Path) {
    std::fs::create_dir(src).unwrap();
    let digest = metacopy(good_digest);
    redirected(src, "good", "ab/good", &digest, 11);
    redirected(src, "tampered", "ab/tampered", &digest, 11);
    redirected(src, "no-verity-on-object", "ab/plain", &digest, 11);
    redirected(src, "no-digest-in-image", "ab/good", b"", 11);
    fixtures::mkfs_erofs(src, image, &[]).unwrap();
}

/// What `--verity require` must serve from [`write_verity_image`]'s image: `good` (content
/// `good`), and EIO for the other three.
fn assert_only_good_is_served(mnt: &Path, good: &[u8]) {
    assert_eq!(std::fs::read(mnt.join("good")).unwrap(), good);
    for name in ["tampered", "no-verity-on-object", "no-digest-in-image"] {
        let err = std::fs::read(mnt.join(name)).expect_err(name);
        assert_eq!(err.raw_os_error(), Some(5), "{name}: {err}");
    }
}

/// `lazycfs mount [IMAGE, MOUNTPOINT, BASEDIR] EXTRA --digest D` refuses a digest one nibble
/// off the image's own `digest` (exit 2, "differs") and mounts with the right one (left
/// mounted for the caller to read and unmount).
fn assert_digest_is_checked(paths: [&PathBuf; 3], extra: &[&str], digest: &[u8; 32]) {
    let [image, mnt, objects] = paths;
    let mount_with = |digest: &str| {
        Command::new(env!("CARGO_BIN_EXE_lazycfs"))
            .args(["mount", "--mode", "direct"])
            .args(extra)
            .arg(image)
            .arg(mnt)
            .arg("--basedir")
            .arg(objects)
            .args(["--digest", digest])
            .output()
            .unwrap()
    };
    let right: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut wrong = right.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let refused = mount_with(std::str::from_utf8(&wrong).unwrap());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("differs"), "{stderr}");
    let mounted = mount_with(&right);
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
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
        // Without kernel fs-verity, `--verity require` must refuse every object; the tampered
        // and good objects themselves cannot be made.
        fails_closed_without_kernel_verity(&fs.mnt);
        common::skip_kernel_lacks(
            test,
            "fs-verity",
            "tampered objects not tested (only that --verity require fails closed)",
        );
        return;
    }
    let objects = fs.mnt.join("objects");
    std::fs::create_dir_all(objects.join("ab")).unwrap();
    std::fs::write(objects.join("ab/good"), b"good object").unwrap();
    std::fs::write(objects.join("ab/tampered"), b"tampered!!!").unwrap();
    std::fs::write(objects.join("ab/plain"), b"no verity!!").unwrap();
    let good = enable_verity(&objects.join("ab/good"));
    enable_verity(&objects.join("ab/tampered"));

    let image = fs.mnt.join("image.erofs");
    write_verity_image(&fs.mnt.join("src"), &good, &image);

    let mnt = fs.mnt.join("lazy");
    std::fs::create_dir(&mnt).unwrap();

    let _unmount = Guard::mount(&mnt);
    let serve = |verity: bool| {
        let options = ServeOptions::new()
            .basedir(&objects)
            .threads(2)
            .require_verity(verity);
        lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &options).unwrap()
    };

    let mounted = serve(true);
    assert_only_good_is_served(&mnt, b"good object");
    mounted.unmount().unwrap();

    // Without verity checks every object is served.
    let mounted = serve(false);
    assert_eq!(std::fs::read(mnt.join("tampered")).unwrap(), b"tampered!!!");
    mounted.unmount().unwrap();

    // --digest: the image's own fs-verity digest must match.
    let paths = [&image, &mnt, &objects];
    assert_digest_is_checked(paths, &[], &enable_verity(&image));
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
    let _unmount = Guard::mount(&mnt);
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

/// The positive path, on any kernel: objects served by a FUSE filesystem that reports fs-verity
/// digests ([`VerityReportingFs`]). `--verity require` serves an object whose digest matches its
/// metacopy and refuses one whose digest differs or that has no verity, and `--digest` accepts
/// the image's own digest and refuses another.
#[test]
fn verity_require_serves_objects_whose_reported_digest_matches() {
    let test = "verity_require_serves_objects_whose_reported_digest_matches";
    if !kernel::require_root(test) || !fixtures::require_mkfs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good: &[u8] = b"good object";
    let good_digest = verity_digest(good);
    let image_file = dir.path().join("image.erofs");
    write_verity_image(&dir.path().join("src"), &good_digest, &image_file);
    let image_bytes = std::fs::read(&image_file).unwrap();

    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let fs = VerityReportingFs::new(vec![
        ("image.erofs", image_bytes.clone(), true),
        ("ab/good", good.to_vec(), true),
        ("ab/tampered", b"tampered!!!".to_vec(), true),
        ("ab/plain", b"no verity!!".to_vec(), false),
    ]);
    let mut config = fuser::Config::default();
    config.mount_options.push(fuser::MountOption::RO);
    let _store = Session::new(fuser::spawn_mount(fs, &store, &config).unwrap(), &store);
    // The store is the basedir, and holds the image too.
    let (objects, image) = (store.clone(), store.join("image.erofs"));
    assert_eq!(std::fs::read(store.join("ab/good")).unwrap(), good);

    let mnt = dir.path().join("lazy");
    std::fs::create_dir(&mnt).unwrap();

    let _unmount = Guard::mount(&mnt);
    let options = ServeOptions::new()
        .basedir(&objects)
        .threads(2)
        .require_verity(true);
    let mounted = lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &options).unwrap();
    assert_only_good_is_served(&mnt, good);
    // The refusals did not stop the server.
    assert_eq!(std::fs::read(mnt.join("good")).unwrap(), good);
    mounted.unmount().unwrap();

    let paths = [&image, &mnt, &objects];
    assert_digest_is_checked(
        paths,
        &["--verity", "require"],
        &verity_digest(&image_bytes),
    );
    assert_eq!(std::fs::read(mnt.join("good")).unwrap(), good);
    assert_eq!(
        std::fs::read(mnt.join("tampered"))
            .unwrap_err()
            .raw_os_error(),
        Some(5)
    );
    lazycfs::mount::unmount(&mnt).unwrap();
}

/// The fs-verity SHA-256 digest of `data`, computed as the kernel does (composefs-rs).
fn verity_digest(data: &[u8]) -> [u8; 32] {
    let digest: composefs::fsverity::Sha256HashValue = composefs::fsverity::compute_verity(data);
    zerocopy::IntoBytes::as_bytes(&digest).try_into().unwrap()
}

/// What a filesystem with fs-verity shows its readers, without needing kernel fs-verity: a
/// read-only FUSE filesystem of in-memory files that answers `FS_IOC_MEASURE_VERITY` with each
/// file's fs-verity digest, or ENODATA for a file without verity, as ext4 would. (The kernel
/// forwards that ioctl to FUSE servers whether or not it was built with CONFIG_FS_VERITY.)
struct VerityReportingFs {
    /// Inode `i + 1`; the root (inode 1) is a directory.
    nodes: Vec<Node>,
}

struct Node {
    parent: u64,
    name: String,
    /// `None` for a directory.
    file: Option<VerityFile>,
}

struct VerityFile {
    data: Vec<u8>,
    verity: Option<[u8; 32]>,
}

/// `FS_IOC_MEASURE_VERITY`: `_IOWR('f', 134, struct fsverity_digest)`.
const FS_IOC_MEASURE_VERITY: u32 = 0xc004_6686;
const TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl VerityReportingFs {
    /// Files as (path with at most one directory, content, whether verity is enabled).
    fn new(files: Vec<(&str, Vec<u8>, bool)>) -> VerityReportingFs {
        let mut fs = VerityReportingFs {
            nodes: vec![Node {
                parent: 1,
                name: String::new(),
                file: None,
            }],
        };
        for (path, data, verity) in files {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let parent = if dir.is_empty() {
                1
            } else {
                fs.child(1, dir).unwrap_or_else(|| {
                    fs.nodes.push(Node {
                        parent: 1,
                        name: dir.into(),
                        file: None,
                    });
                    fs.nodes.len() as u64
                })
            };
            let verity = verity.then(|| verity_digest(&data));
            fs.nodes.push(Node {
                parent,
                name: name.into(),
                file: Some(VerityFile { data, verity }),
            });
        }
        fs
    }

    fn child(&self, parent: u64, name: &str) -> Option<u64> {
        let i = self
            .nodes
            .iter()
            .skip(1)
            .position(|n| n.parent == parent && n.name == name)?;
        Some(i as u64 + 2)
    }

    fn node(&self, ino: fuser::INodeNo) -> Option<&Node> {
        self.nodes.get((ino.0 as usize).checked_sub(1)?)
    }

    fn attr(&self, ino: u64) -> fuser::FileAttr {
        let file = self.nodes[ino as usize - 1].file.as_ref();
        fuser::FileAttr {
            ino: fuser::INodeNo(ino),
            size: file.map_or(0, |f| f.data.len() as u64),
            blocks: 0,
            atime: std::time::UNIX_EPOCH,
            mtime: std::time::UNIX_EPOCH,
            ctime: std::time::UNIX_EPOCH,
            crtime: std::time::UNIX_EPOCH,
            kind: match file {
                Some(_) => fuser::FileType::RegularFile,
                None => fuser::FileType::Directory,
            },
            perm: if file.is_some() { 0o444 } else { 0o555 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl fuser::Filesystem for VerityReportingFs {
    fn lookup(
        &self,
        _req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &std::ffi::OsStr,
        reply: fuser::ReplyEntry,
    ) {
        match name.to_str().and_then(|name| self.child(parent.0, name)) {
            Some(ino) => reply.entry(&TTL, &self.attr(ino), fuser::Generation(0)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        match self.node(ino) {
            Some(_) => reply.attr(&TTL, &self.attr(ino.0)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        let Some(VerityFile { data, .. }) = self.node(ino).and_then(|n| n.file.as_ref()) else {
            return reply.error(fuser::Errno::EISDIR);
        };
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        reply.data(&data[start..end]);
    }

    fn ioctl(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        if cmd != FS_IOC_MEASURE_VERITY {
            return reply.error(fuser::Errno::ENOTTY);
        }
        let Some(file) = self.node(ino).and_then(|n| n.file.as_ref()) else {
            return reply.error(fuser::Errno::ENOTTY);
        };
        let Some(digest) = file.verity else {
            return reply.error(fuser::Errno::ENODATA);
        };
        // struct fsverity_digest { u16 digest_algorithm; u16 digest_size; u8 digest[]; }
        let room = in_data
            .get(2..4)
            .map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]));
        if room < 32 {
            return reply.error(fuser::Errno::EOVERFLOW);
        }
        let header = [1u16.to_ne_bytes(), 32u16.to_ne_bytes()].concat();
        reply.ioctl(0, &[&header[..], &digest].concat());
    }
}
