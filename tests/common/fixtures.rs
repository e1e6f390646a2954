//! Real EROFS images built with Debian's `mkfs.erofs` (erofs-utils 1.5) from
//! directory trees created by the tests.
//!
//! Notes on erofs-utils 1.5 (verified on Debian 12):
//! * Per-file mtimes (with nanoseconds) are kept by default: any inode whose
//!   mtime differs from the build time gets an extended (64-byte) inode.
//!   `-T#` sets ALL mtimes to `#` (and then compact inodes suffice), and
//!   `--ignore-mtime` / `-E force-inode-compact` replace them with the build
//!   time. `SOURCE_DATE_EPOCH` would clamp mtimes, so [`mkfs_erofs`] clears it.
//! * `-x#` is the xattr "tolerance": an xattr (name+value) is stored in the
//!   shared xattr area when it occurs MORE than `#` times, else inline. So the
//!   default (2) already shares xattrs used 3+ times, `-x0` shares every
//!   xattr, a huge value keeps all inline, `-x-1` drops xattrs.
//! * There is no `-b` (block size = page size, 4096).
//! * Sockets, fifos and devices are kept; POSIX ACLs and `security.*`/
//!   `trusted.*` xattrs are kept verbatim.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Timestamps, XattrFlags};

use super::skip;

/// Deterministic pseudo-random bytes (splitmix64 seeded from `seed`).
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut state = fnv1a(seed.as_bytes());
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn ctx<T>(r: io::Result<T>, what: &str, p: &Path) -> T {
    r.unwrap_or_else(|e| panic!("{what} {}: {e}", p.display()))
}

fn mkdir(p: &Path) {
    ctx(fs::create_dir_all(p), "mkdir", p);
}

fn write(p: &Path, content: &[u8]) {
    ctx(fs::write(p, content), "write", p);
}

fn symlink(target: &[u8], p: &Path) {
    ctx(
        std::os::unix::fs::symlink(OsStr::from_bytes(target), p),
        "symlink",
        p,
    );
}

fn mknod(p: &Path, ft: FileType, perm: u32, major: u32, minor: u32) {
    let dev = rustix::fs::makedev(major, minor);
    ctx(
        rustix::fs::mknodat(CWD, p, ft, Mode::from_raw_mode(perm), dev).map_err(io::Error::from),
        "mknod",
        p,
    );
}

fn chown(p: &Path, uid: u32, gid: u32) {
    ctx(lchown(p, Some(uid), Some(gid)), "lchown", p);
}

fn chmod(p: &Path, mode: u32) {
    ctx(
        fs::set_permissions(p, fs::Permissions::from_mode(mode)),
        "chmod",
        p,
    );
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    ctx(
        rustix::fs::lsetxattr(p, name, value, XattrFlags::empty()).map_err(io::Error::from),
        &format!("lsetxattr {name}"),
        p,
    );
}

/// Sets atime and mtime of `p` without following symlinks.
pub fn set_mtime(p: &Path, sec: i64, nsec: u32) {
    let ts = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    ctx(
        rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from),
        "utimensat",
        p,
    );
}

/// POSIX ACL tags (`<linux/posix_acl.h>`).
pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;
pub const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Encodes the `system.posix_acl_*` xattr format: le32 version 2, then
/// entries `{le16 tag, le16 perm, le32 id}` (entries must be sorted by tag,
/// then id, as the kernel validates).
pub fn posix_acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// USER_OBJ rwx, USER 1000 r-x, GROUP_OBJ r-x, MASK r-x, OTHER r-- (mode 0754).
pub fn sample_acl() -> Vec<u8> {
    posix_acl_xattr(&[
        (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
        (ACL_USER, 5, 1000),
        (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
        (ACL_GROUP, 4, 100000),
        (ACL_MASK, 5, ACL_UNDEFINED_ID),
        (ACL_OTHER, 4, ACL_UNDEFINED_ID),
    ])
}

/// A valid `vfs_cap_data` revision-2 blob (20 bytes): magic
/// 0x02000000|EFFECTIVE, permitted = CAP_NET_BIND_SERVICE | CAP_NET_RAW,
/// inheritable = 0.
pub fn sample_capability() -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0200_0001u32, (1 << 10) | (1 << 13), 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// Symlink target of exactly `len` bytes (a long relative path; need not exist).
pub fn long_target(len: usize) -> Vec<u8> {
    let mut t: Vec<u8> = b"../".to_vec();
    let mut i = 0;
    while t.len() < len {
        t.extend_from_slice(format!("component{i:03}/").as_bytes());
        i += 1;
    }
    t.truncate(len);
    if t.last() == Some(&b'/') {
        *t.last_mut().unwrap() = b'x';
    }
    t
}

/// Sizes of the pseudo-random files in `files/` (tail-packing edge cases).
pub const RICH_FILE_SIZES: &[usize] = &[
    1,
    100,
    4095,
    4096,
    4097,
    8192,
    10000,
    65537,
    1024 * 1024 + 3,
];

/// Symlink target lengths in `links/` (4095 = PATH_MAX - 1).
pub const RICH_SYMLINK_LENGTHS: &[usize] = &[1, 100, 1000, 4095];

/// Longest file name mkfs.erofs 1.5 accepts (255-byte names make it fail
/// with ENOENT, although EROFS and the kernel allow 255).
pub const MKFS_MAX_NAME_LEN: usize = 254;

/// Number of entries in `big/`.
pub const RICH_BIG_ENTRIES: usize = 20_000;

/// Deterministic mtime for entry `rel` of the rich tree (special cases in `times/`).
fn rich_mtime(rel: &[u8]) -> (i64, u32) {
    match rel {
        b"/times/zero_nsec" => (1_600_000_000, 0),
        b"/times/max_nsec" => (1_600_000_000, 999_999_999),
        b"/times/epoch" => (0, 0),
        b"/times/far_future" => (5_000_000_000, 123),
        b"/times/pre_epoch" => (-1_000_000, 500_000_000),
        _ => {
            let h = fnv1a(rel);
            (
                1_500_000_000 + (h % 200_000_000) as i64,
                ((h >> 32) % 1_000_000_000) as u32,
            )
        }
    }
}

/// Builds the rich fixture tree in `dir` (created if missing; should be
/// empty). Needs root (chown, mknod, trusted.* xattrs) and a filesystem with
/// user/trusted/security xattrs and POSIX ACLs (ext4, tmpfs...).
///
/// Layout (all deterministic, every entry has a distinct mtime with ns):
/// * `empty_dir/`, `empty_file`, `nested/a/b/c/d/deep_file`
/// * `files/size_<N>` for [`RICH_FILE_SIZES`], `files/zeros_8192`,
///   `files/sparse` (3 MiB with a hole), `files/small_text`
/// * `links/len_<N>` for [`RICH_SYMLINK_LENGTHS`], `links/to_dir`,
///   `links/dangling_abs`, `links/owned` (owner 1000:1000)
/// * hardlink group of 3: `hardlinks/h1`, `nested/a/h2`, `files/h3`
/// * `dev/`: char 1:3, char 259:1048575, block 8:1, block 4095:1048575,
///   fifo, socket
/// * `names/`: [`MKFS_MAX_NAME_LEN`]-byte names (file and dir), spaces, `=`, `\n`, `\t`,
///   `\\`, 0xff, UTF-8, leading `-` and `.`
/// * `xattrs/`: user.* (several, 2000-byte value, empty value, long name),
///   trusted.*, trusted.overlay.opaque (dir), security.capability,
///   security.selinux, POSIX access ACL (file) and access+default ACL (dir)
/// * `shared/f0..f9`: the same user.* and trusted.* xattrs on 10 files
/// * `modes/`: setuid, setgid, sticky dir, 0000, 0777, ...
/// * `owners/`: uid/gid 0, 1000, 65534, 100000
/// * `times/`: mtimes with 0 / 999999999 ns, epoch, pre-epoch, > 2^32
/// * `big/`: [`RICH_BIG_ENTRIES`] entries (`f00000`... files, a few `d*`
///   subdirs and `l*` symlinks)
pub fn rich_tree(dir: &Path) {
    mkdir(dir);
    let p = |rel: &str| dir.join(rel);

    mkdir(&p("empty_dir"));
    write(&p("empty_file"), b"");
    mkdir(&p("nested/a/b/c/d"));
    write(&p("nested/a/b/c/d/deep_file"), b"deep\n");

    // Regular files.
    mkdir(&p("files"));
    for &n in RICH_FILE_SIZES {
        let name = format!("files/size_{n}");
        write(&p(&name), &pseudo_random(&name, n));
    }
    write(&p("files/zeros_8192"), &[0u8; 8192]);
    write(&p("files/small_text"), b"hello, erofs\n");
    {
        use std::io::{Seek, SeekFrom, Write};
        let sp = p("files/sparse");
        let mut f = ctx(fs::File::create(&sp), "create", &sp);
        ctx(f.seek(SeekFrom::Start(1024 * 1024 + 17)), "seek", &sp);
        ctx(f.write_all(&pseudo_random("sparse", 5000)), "write", &sp);
        ctx(f.set_len(3 * 1024 * 1024), "truncate", &sp);
    }

    // Symlinks.
    mkdir(&p("links"));
    for &n in RICH_SYMLINK_LENGTHS {
        symlink(&long_target(n), &p(&format!("links/len_{n}")));
    }
    symlink(b"../nested", &p("links/to_dir"));
    symlink(b"/nonexistent/absolute/target", &p("links/dangling_abs"));
    symlink(b"../files/small_text", &p("links/owned"));
    chown(&p("links/owned"), 1000, 1000);

    // Hardlink group of three names across directories.
    mkdir(&p("hardlinks"));
    write(&p("hardlinks/h1"), &pseudo_random("hardlink", 5000));
    for other in ["nested/a/h2", "files/h3"] {
        ctx(
            fs::hard_link(p("hardlinks/h1"), p(other)),
            "link",
            &p(other),
        );
    }

    // Special files.
    mkdir(&p("dev"));
    mknod(&p("dev/null_1_3"), FileType::CharacterDevice, 0o666, 1, 3);
    mknod(
        &p("dev/chr_big"),
        FileType::CharacterDevice,
        0o600,
        259,
        1_048_575,
    );
    mknod(&p("dev/blk_8_1"), FileType::BlockDevice, 0o660, 8, 1);
    mknod(
        &p("dev/blk_big"),
        FileType::BlockDevice,
        0o640,
        4095,
        1_048_575,
    );
    chown(&p("dev/blk_8_1"), 0, 6);
    mknod(&p("dev/fifo"), FileType::Fifo, 0o644, 0, 0);
    // A socket inode (same result as binding a UnixListener, without the
    // 108-byte sun_path limit).
    mknod(&p("dev/socket"), FileType::Socket, 0o755, 0, 0);

    // Odd names.
    mkdir(&p("names"));
    // mkfs.erofs 1.5 fails with ENOENT on 255-byte names (it truncates the
    // name when building the source path), so the longest it can take is 254.
    let long = vec![b'N'; MKFS_MAX_NAME_LEN];
    let mut long_dir = vec![b'D'; MKFS_MAX_NAME_LEN - 1];
    long_dir.push(b'd');
    for name in odd_names() {
        let f = dir.join("names").join(OsStr::from_bytes(&name));
        write(&f, &name);
    }
    let ld = dir.join("names").join(OsStr::from_bytes(&long_dir));
    mkdir(&ld);
    write(&ld.join(OsStr::from_bytes(&long)), b"long in long\n");

    // Modes (chmod after chown: chown clears setuid/setgid).
    mkdir(&p("modes"));
    let modes: &[(&str, u32)] = &[
        ("setuid", 0o4755),
        ("setgid", 0o2755),
        ("setuid_setgid_x", 0o6711),
        ("mode_000", 0o000),
        ("mode_777", 0o777),
        ("mode_600", 0o600),
    ];
    for (name, mode) in modes {
        let f = p(&format!("modes/{name}"));
        write(&f, name.as_bytes());
        chmod(&f, *mode);
    }
    for (name, mode) in [
        ("sticky_dir", 0o1777),
        ("setgid_dir", 0o2775),
        ("dir_700", 0o700),
    ] {
        let d = p(&format!("modes/{name}"));
        mkdir(&d);
        chmod(&d, mode);
    }

    // Owners.
    mkdir(&p("owners"));
    for (name, uid, gid) in [
        ("u0", 0, 0),
        ("u1000", 1000, 1000),
        ("nobody", 65534, 65534),
        ("u100000", 100_000, 100_000),
        ("mixed", 1000, 100_000),
    ] {
        let f = p(&format!("owners/{name}"));
        write(&f, name.as_bytes());
        chown(&f, uid, gid);
    }
    mkdir(&p("owners/dir1000"));
    chown(&p("owners/dir1000"), 1000, 1000);
    write(&p("owners/setuid1000"), b"setuid owned by 1000");
    chown(&p("owners/setuid1000"), 1000, 1000);
    chmod(&p("owners/setuid1000"), 0o4750);

    // Xattrs.
    mkdir(&p("xattrs"));
    let f = p("xattrs/user_many");
    write(&f, b"x");
    for (k, v) in [("user.a", "1"), ("user.b", "two"), ("user.c", "three3")] {
        setxattr(&f, k, v.as_bytes());
    }
    setxattr(&f, "user.binary", &[0, 1, 2, 0xff, 0xfe, 0]);
    let f = p("xattrs/user_large");
    write(&f, b"large xattr");
    setxattr(&f, "user.large", &pseudo_random("xattr-large", 2000));
    setxattr(&f, "user.small", b"s");
    let f = p("xattrs/user_empty");
    write(&f, b"");
    setxattr(&f, "user.empty", b"");
    let f = p("xattrs/long_name");
    write(&f, b"");
    setxattr(&f, &format!("user.{}", "n".repeat(200)), b"long name");
    let f = p("xattrs/trusted");
    write(&f, b"t");
    setxattr(&f, "trusted.foo", b"bar");
    setxattr(&f, "trusted.overlay.redirect", b"/some/where");
    let d = p("xattrs/opaque_dir");
    mkdir(&d);
    setxattr(&d, "trusted.overlay.opaque", b"y");
    let f = p("xattrs/cap");
    write(&f, b"cap");
    chmod(&f, 0o755);
    setxattr(&f, "security.capability", &sample_capability());
    let f = p("xattrs/selinux");
    write(&f, b"label");
    setxattr(&f, "security.selinux", b"system_u:object_r:usr_t:s0\0");
    let f = p("xattrs/acl_file");
    write(&f, b"acl");
    chmod(&f, 0o754);
    setxattr(&f, "system.posix_acl_access", &sample_acl());
    let d = p("xattrs/acl_dir");
    mkdir(&d);
    chmod(&d, 0o754);
    setxattr(&d, "system.posix_acl_access", &sample_acl());
    setxattr(&d, "system.posix_acl_default", &sample_acl());
    let f = p("xattrs/everything");
    write(&f, b"all prefixes");
    setxattr(&f, "user.u", b"u");
    setxattr(&f, "trusted.t", b"t");
    setxattr(&f, "security.s", b"s");
    setxattr(&f, "system.posix_acl_access", &sample_acl());
    let f = p("xattrs/symlink_xattr");
    symlink(b"target", &f);
    setxattr(&f, "trusted.on_symlink", b"yes");

    // Shared xattrs: the same name+value on many inodes.
    mkdir(&p("shared"));
    for i in 0..10 {
        let f = p(&format!("shared/f{i}"));
        write(&f, format!("shared {i}\n").as_bytes());
        setxattr(&f, "user.shared", b"same value everywhere");
        setxattr(&f, "trusted.shared", b"t");
        setxattr(&f, "user.unique", format!("unique {i}").as_bytes());
    }

    // Timestamps (set in the final pass).
    mkdir(&p("times"));
    for name in ["zero_nsec", "max_nsec", "epoch", "far_future", "pre_epoch"] {
        write(&p(&format!("times/{name}")), name.as_bytes());
    }

    // A directory spanning many dirent blocks.
    let big = p("big");
    mkdir(&big);
    for i in 0..RICH_BIG_ENTRIES {
        if i % 2000 == 7 {
            let d = big.join(format!("d{i:05}"));
            mkdir(&d);
            write(&d.join("inner"), format!("inner {i}\n").as_bytes());
        } else if i % 5000 == 3 {
            symlink(
                format!("f{:05}", i + 1).as_bytes(),
                &big.join(format!("l{i:05}")),
            );
        } else {
            let content: &[u8] = if i % 1000 == 0 {
                b"some content\n"
            } else {
                b""
            };
            write(&big.join(format!("f{i:05}")), content);
        }
    }

    // Final pass: deterministic atime/mtime on every entry (no later
    // modification of any directory, so these stick).
    set_times_rec(dir, b"/".to_vec());
}

fn set_times_rec(abs: &Path, rel: Vec<u8>) {
    let md = ctx(fs::symlink_metadata(abs), "lstat", abs);
    if md.is_dir() {
        for ent in ctx(fs::read_dir(abs), "read_dir", abs) {
            let ent = ctx(ent, "read_dir", abs);
            let mut crel = rel.clone();
            if crel != b"/" {
                crel.push(b'/');
            }
            crel.extend_from_slice(ent.file_name().as_bytes());
            set_times_rec(&ent.path(), crel);
        }
    }
    let (s, ns) = rich_mtime(&rel);
    set_mtime(abs, s, ns);
}

/// A single directory `dir` (created if missing) with `n` empty regular
/// files named `f000000`, `f000001`, ... (fast: `openat` relative to the
/// directory fd).
pub fn big_dir_tree(dir: &Path, n: usize) {
    mkdir(dir);
    let dfd = ctx(
        rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from),
        "open",
        dir,
    );
    for i in 0..n {
        let name = format!("f{i:06}");
        let r = rustix::fs::openat(
            &dfd,
            name.as_str(),
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::TRUNC,
            Mode::from_raw_mode(0o644),
        );
        ctx(r.map_err(io::Error::from), "create", &dir.join(&name));
    }
}

/// Runs `mkfs.erofs --quiet EXTRA... OUT SRC` and checks its exit status
/// (stderr/stdout in the error). `SOURCE_DATE_EPOCH` is removed from the
/// environment so that per-file mtimes are preserved.
pub fn mkfs_erofs(src: &Path, out: &Path, extra_args: &[&str]) -> io::Result<()> {
    let output = Command::new("mkfs.erofs")
        .arg("--quiet")
        .args(extra_args)
        .arg(out)
        .arg(src)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running mkfs.erofs: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "mkfs.erofs {extra_args:?} {} {} failed ({}):\nstderr: {}\nstdout: {}",
            out.display(),
            src.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        )))
    }
}

/// Runs `fsck.erofs IMAGE`, returning its output on failure.
pub fn fsck_erofs(image: &Path) -> io::Result<()> {
    let output = Command::new("fsck.erofs").arg(image).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fsck.erofs {} failed ({}): {}{}",
            image.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Uncompressed mkfs.erofs 1.5 option sets, each verified to build the rich
/// tree, pass `fsck.erofs` and mount on the kernel.
///
/// * `default`: tail-packed inline data, xattrs used 3+ times shared,
///   extended inodes wherever mtime != build time (i.e. everywhere here).
/// * `shared-xattrs` (`-x0`): every xattr goes to the shared xattr area.
/// * `inline-xattrs`: tolerance so high that no xattr is ever shared.
/// * `chunked-4k` / `chunked-64k`: chunk-based regular files (chunk index
///   arrays instead of FLAT_PLAIN/FLAT_INLINE).
/// * `noinline`: FLAT_PLAIN everywhere (no tail packing).
/// * `extended`: 64-byte inodes for everything.
/// * `fixed-time` (`-T`): every mtime = 1234567890, so mkfs picks compact
///   inodes except where uid/gid/nlink/size need extended ones: a mix.
/// * `combo`: chunked + shared xattrs + no inline data + extended inodes.
///
/// Not listed: `-Eforce-inode-compact` refuses the rich tree ("file ...
/// cannot be in compact form": uid/gid 100000 do not fit in 16 bits), and on
/// trees where it works it replaces every mtime with the build time. Use
/// `fixed-time` for compact inodes.
pub fn mkfs_variants() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("default", vec![]),
        ("shared-xattrs", vec!["-x0"]),
        ("inline-xattrs", vec!["-x1000000"]),
        ("chunked-4k", vec!["--chunksize=4096"]),
        ("chunked-64k", vec!["--chunksize=65536"]),
        ("noinline", vec!["-Enoinline_data"]),
        ("extended", vec!["-Eforce-inode-extended"]),
        ("fixed-time", vec!["-T1234567890"]),
        ("nosbcrc", vec!["-Enosbcrc"]),
        (
            "combo",
            vec![
                "-x0",
                "--chunksize=8192",
                "-Enoinline_data,force-inode-extended",
            ],
        ),
    ]
}

/// Compressed variants (LZ4; the kernel reads them, a decoder may not).
pub fn mkfs_compressed_variants() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("lz4", vec!["-zlz4"]),
        ("lz4hc", vec!["-zlz4hc,12"]),
        ("lz4hc-ztailpacking", vec!["-zlz4hc", "-Eztailpacking"]),
        ("lz4-legacy", vec!["-zlz4", "-Elegacy-compress"]),
    ]
}

/// The files of the rich tree's `names/` (beside them, one directory with a long name).
pub fn odd_names() -> Vec<Vec<u8>> {
    let long = vec![b'N'; MKFS_MAX_NAME_LEN];
    [
        &b"with space"[..],
        b"trailing space ",
        b"a=b",
        b"new\nline",
        b"tab\tname",
        b"back\\slash",
        b"\xffbyte",
        "ünïcödé".as_bytes(),
        b"-dash",
        b".hidden",
        &long,
    ]
    .map(<[u8]>::to_vec)
    .to_vec()
}

/// Builds [`rich_tree`] in `<tempdir>/src` and the image
/// `<tempdir>/image.erofs` with `mkfs.erofs variant_args`. Panics on failure
/// (keeping the tree). With env `LAZYCFS_KEEP_FIXTURES` set, the temporary
/// directory is never deleted (for inspection with dump.erofs etc.).
pub fn build_rich_image(variant_args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let mut td = tempfile::Builder::new()
        .prefix("lazycfs-rich-")
        .tempdir()
        .expect("tempdir");
    if std::env::var_os("LAZYCFS_KEEP_FIXTURES").is_some() {
        td.disable_cleanup(true);
        eprintln!("LAZYCFS_KEEP_FIXTURES: keeping {}", td.path().display());
    }
    let src = rich_source(&td);
    rich_tree(&src);
    let image = td.path().join("image.erofs");
    if let Err(e) = mkfs_erofs(&src, &image, variant_args) {
        let kept = td.keep();
        panic!("{e}\n(tree kept for inspection in {})", kept.display());
    }
    (td, image)
}

/// Where [`build_rich_image`] put the source tree.
pub fn rich_source(td: &tempfile::TempDir) -> PathBuf {
    td.path().join("src")
}

/// True if `mkfs.erofs` can be run; otherwise skips (panics under `CI`).
pub fn require_mkfs(test: &str) -> bool {
    match Command::new("mkfs.erofs").arg("--help").output() {
        Ok(_) => true,
        Err(e) => {
            skip(
                test,
                &format!("mkfs.erofs not runnable ({e}); apt-get install erofs-utils"),
            );
            false
        }
    }
}
