//! The digest contract of `lazycfs create`: for the same tree, every format writes the bytes
//! the composefs crate's writer (composefs-rs 0.9.4) writes, and so the same fs-verity
//! digest. Checked from dumpfiles (every corpus dumpfile and generated edge cases, through
//! `create --from-dump`) and from a directory (`create DIR` against the crate writing the
//! dumpfile of the tree it read); `dump | create --from-dump` gives the image back; a bad
//! dumpfile line is one error line naming it, with exit status 4 and no image.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{cfs, fixtures, tree};
use composefs::fsverity::{Sha256HashValue, compute_verity};
use zerocopy::IntoBytes;

const LAZYCFS: &str = env!("CARGO_BIN_EXE_lazycfs");
const FORMATS: [(u32, &str); 3] = [(0, "v0"), (1, "v1"), (2, "v2")];

/// `lazycfs create --from-dump - IMAGE --format F` with `dump` on stdin.
fn create_from_dump(dump: &[u8], image: &Path, format: &str) -> Output {
    let mut child = Command::new(LAZYCFS)
        .args(["create", "--from-dump", "-"])
        .arg(image)
        .args(["--format", format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let dump = dump.to_vec();
    let writer = std::thread::spawn(move || {
        // The command may stop reading at a bad line.
        let _ = stdin.write_all(&dump);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn create_from_dump_ok(dump: &[u8], image: &Path, format: &str) -> Vec<u8> {
    let out = create_from_dump(dump, image, format);
    assert!(
        out.status.success(),
        "create --from-dump --format {format}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(image).unwrap()
}

/// `lazycfs create SOURCE IMAGE --digest-only --format F`, which must succeed: the image.
fn create_dir_ok(source: &Path, image: &Path, format: &str) -> Vec<u8> {
    let out = Command::new(LAZYCFS)
        .arg("create")
        .arg(source)
        .arg(image)
        .args(["--digest-only", "--format", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "create --format {format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(image).unwrap()
}

fn verity(bytes: &[u8]) -> String {
    let digest: Sha256HashValue = compute_verity(bytes);
    digest
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts the two images are the same bytes, with the same fs-verity digest.
fn assert_same_image(ours: &[u8], reference: &[u8], what: &str) {
    if ours != reference {
        let at = ours
            .iter()
            .zip(reference)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(reference.len()));
        panic!(
            "{what}: lazycfs writes {} bytes, the composefs crate {}; first difference at byte {at} \
             (block {}, offset {})",
            ours.len(),
            reference.len(),
            at / 4096,
            at % 4096
        );
    }
    assert_eq!(verity(ours), verity(reference), "{what}: fs-verity digest");
}

/// `dump` in every format: `create --from-dump` writes the crate's bytes; with `round_trip`,
/// `lazycfs dump` of that image read back by `create --from-dump` gives the same bytes again.
/// (A dumpfile names objects by their digest: an external file given without one comes back
/// with it, as the crate's image of the dumpfile composefs prints for the tree.)
fn check_dump(dump: &str, what: &str, round_trip: bool) {
    let td = tempfile::tempdir().unwrap();
    for (version, format) in FORMATS {
        let reference = cfs::write_image(dump, version);
        let image = td.path().join(format!("{format}.cfs"));
        let ours = create_from_dump_ok(dump.as_bytes(), &image, format);
        assert_same_image(&ours, &reference, &format!("{what} --format {format}"));
        if !round_trip {
            continue;
        }
        let dumped = cfs::lazycfs_dump(&ours);
        let again = td.path().join(format!("{format}.again.cfs"));
        let again = create_from_dump_ok(dumped.as_bytes(), &again, format);
        let with_digests = cfs::write_image(&cfs::canonical_dump(dump), version);
        assert_same_image(
            &again,
            &with_digests,
            &format!("{what} --format {format}, dump | create --from-dump"),
        );
        assert_eq!(
            cfs::lazycfs_dump(&again),
            dumped,
            "{what} --format {format}: dump again"
        );
    }
}

#[test]
fn every_corpus_dumpfile_gives_the_crates_bytes_and_round_trips() {
    let Some(corpus) = cfs::writable_corpus("every_corpus_dumpfile_gives_the_crates_bytes") else {
        return;
    };
    let mut checked = 0;
    for (name, dump) in corpus {
        check_dump(&dump.text, name, true);
        checked += 1;
    }
    eprintln!("{checked} corpus files compared");
    assert_eq!(checked, cfs::CORPUS_WRITABLE);
}

/// A dumpfile line: path, size, mode, uid/gid, rdev, mtime, payload, content, digest, xattrs.
#[allow(clippy::too_many_arguments)]
fn line(
    out: &mut String,
    path: &str,
    size: u64,
    mode: u32,
    owner: (u32, u32),
    rdev: u64,
    mtime: (u64, u32),
    data: (&str, &str, &str),
    xattrs: &[(&str, &str)],
) {
    write!(
        out,
        "{path} {size} {mode:o} 1 {} {} {rdev} {}.{} {} {} {}",
        owner.0, owner.1, mtime.0, mtime.1, data.0, data.1, data.2
    )
    .unwrap();
    for (name, value) in xattrs {
        write!(out, " {name}={value}").unwrap();
    }
    out.push('\n');
}

fn dir(out: &mut String, path: &str, mtime: (u64, u32), xattrs: &[(&str, &str)]) {
    line(
        out,
        path,
        0,
        0o40755,
        (0, 0),
        0,
        mtime,
        ("-", "-", "-"),
        xattrs,
    );
}

fn inline(
    out: &mut String,
    path: &str,
    content: &[u8],
    mtime: (u64, u32),
    xattrs: &[(&str, &str)],
) {
    let escaped = if content.is_empty() {
        "-".to_string()
    } else {
        content.iter().map(|b| format!("\\x{b:02x}")).collect()
    };
    let size = content.len() as u64;
    line(
        out,
        path,
        size,
        0o100644,
        (0, 0),
        0,
        mtime,
        ("-", &escaped, "-"),
        xattrs,
    );
}

fn external(out: &mut String, path: &str, size: u64, seed: u8, xattrs: &[(&str, &str)]) {
    let digest: String = (0..32u8)
        .map(|i| format!("{:02x}", i.wrapping_mul(7) ^ seed))
        .collect();
    let payload = format!("{}/{}", &digest[..2], &digest[2..]);
    line(
        out,
        path,
        size,
        0o100644,
        (0, 0),
        0,
        (1000, 0),
        (&payload, "-", &digest),
        xattrs,
    );
}

fn hardlink(out: &mut String, path: &str, target: &str) {
    writeln!(out, "{path} 0 @100644 - - - - 0.0 {target} - -").unwrap();
}

fn x(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// Hard links (first met deeper than a later link, in the same directory, across levels).
fn hard_links() -> String {
    let mut d = String::new();
    dir(&mut d, "/", (1000, 0), &[]);
    dir(&mut d, "/a", (1000, 0), &[]);
    dir(&mut d, "/a/deep", (1000, 0), &[]);
    inline(
        &mut d,
        "/a/deep/original",
        b"shared content",
        (1000, 0),
        &[("user.k", "v")],
    );
    hardlink(&mut d, "/a/deep/same_dir", "/a/deep/original");
    external(&mut d, "/a/external", 10000, 1, &[]);
    hardlink(&mut d, "/a/link_to_external", "/a/external");
    dir(&mut d, "/b", (1000, 0), &[]);
    hardlink(&mut d, "/b/shallow", "/a/deep/original");
    hardlink(&mut d, "/root_link", "/a/deep/original");
    line(
        &mut d,
        "/sym",
        6,
        0o120777,
        (0, 0),
        0,
        (1000, 0),
        ("/a/b/c", "-", "-"),
        &[],
    );
    writeln!(d, "/sym_link 0 @120777 - - - - 0.0 /sym - -").unwrap();
    d
}

/// Whiteouts: in the root (including names that look like the stubs), in a subdirectory,
/// with xattrs.
fn whiteouts() -> String {
    let mut d = String::new();
    dir(
        &mut d,
        "/",
        (1000, 5),
        &[("security.selinux", "system_u:object_r:root_t:s0")],
    );
    dir(&mut d, "/sub", (1000, 0), &[]);
    line(
        &mut d,
        "/sub/gone",
        0,
        0o20000,
        (0, 0),
        0,
        (999, 0),
        ("-", "-", "-"),
        &[("user.a", "b")],
    );
    line(
        &mut d,
        "/sub/not_a_whiteout",
        0,
        0o20000,
        (0, 0),
        0x0103,
        (1000, 0),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/wh",
        0,
        0o20000,
        (5, 5),
        0,
        (1000, 0),
        ("-", "-", "-"),
        &[],
    );
    d
}

/// The source's own overlay xattrs (escaped), long names and values, xattrs shared by many
/// inodes and by two, ACLs, lustre and whole names, every prefix.
fn xattrs() -> String {
    let long_value = x(3000, 'v');
    let longest_name = format!("user.{}", x(250, 'n'));
    let mut d = String::new();
    dir(
        &mut d,
        "/",
        (1000, 0),
        &[("trusted.overlay.origin", "y"), ("user.shared", "1")],
    );
    let acl = "\\x02\\x00\\x00\\x00\\x01\\x00\\x06\\x00\\xff\\xff\\xff\\xff\\x04\\x00\\x04\\x00\\xff\\xff\\xff\\xff\\x20\\x00\\x04\\x00\\xff\\xff\\xff\\xff";
    for i in 0..6 {
        let path = format!("/f{i}");
        let value = format!("{i}");
        let mut xs: Vec<(&str, &str)> = vec![
            ("user.shared", "1"),
            ("security.selinux", "system_u:object_r:etc_t:s0"),
            ("trusted.overlay.redirect", "/somewhere"),
            ("user.own", &value),
        ];
        if i % 2 == 0 {
            xs.push(("system.posix_acl_access", acl));
            xs.push(("lustre.thing", "l"));
            xs.push(("trusted.overlay.upper", ""));
        }
        if i == 3 {
            xs.push(("user.big", &long_value));
            xs.push((&longest_name, "z"));
            xs.push(("trusted.overlay.metacopy", ""));
            xs.push(("system.posix_acl_default", acl));
            xs.push(("other.namespace", "kept\\x20whole"));
        }
        inline(&mut d, &path, b"x", (1000, 0), &xs);
    }
    dir(
        &mut d,
        "/d",
        (1000, 0),
        &[("user.shared", "\\x00\\x00"), ("user.big", &long_value)],
    );
    dir(
        &mut d,
        "/e",
        (1000, 0),
        &[("user.shared", "\\xee"), ("user.big", &long_value)],
    );
    external(&mut d, "/d/ext", 1 << 20, 2, &[("user.shared", "1")]);
    d
}

/// Every file type, devices, owners that need extended inodes, times before and after the
/// oldest, nanoseconds, sizes at the block and inline limits.
fn file_types_and_sizes() -> String {
    let mut d = String::new();
    dir(&mut d, "/", (1000, 123), &[]);
    line(
        &mut d,
        "/blk",
        0,
        0o60640,
        (0, 6),
        0x0801,
        (1000, 123),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/chr",
        0,
        0o20666,
        (0, 0),
        0x0103,
        (2000, 1),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/chr_big",
        0,
        0o20666,
        (0, 0),
        0xfff0_0fff,
        (1000, 123),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/fifo",
        0,
        0o10600,
        (70000, 0),
        0,
        (1000, 123),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/sock",
        0,
        0o140755,
        (0, 70000),
        0,
        (1000, 999_999_999),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/old",
        0,
        0o100000,
        (0, 0),
        0,
        (999, 0),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/odd_mode",
        0,
        0o107777,
        (1, 2),
        0,
        (1000, 123),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/sparse",
        123456,
        0o100644,
        (0, 0),
        0,
        (1000, 123),
        ("-", "-", "-"),
        &[],
    );
    line(
        &mut d,
        "/noverity",
        5000,
        0o100644,
        (0, 0),
        0,
        (1000, 123),
        (
            "ab/cdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
            "-",
            "-",
        ),
        &[],
    );
    for size in [
        0u64,
        1,
        4095,
        4096,
        4097,
        8192,
        1 << 20,
        (1 << 20) + 1,
        1 << 32,
        (1 << 32) + 1,
        1 << 44,
    ] {
        external(&mut d, &format!("/ext_{size}"), size, size as u8, &[]);
    }
    for size in [1usize, 63, 64, 65, 500, 512] {
        inline(
            &mut d,
            &format!("/inline_{size}"),
            &vec![b'i'; size],
            (1000, 123),
            &[],
        );
    }
    for len in [1usize, 100, 1000, 1024] {
        let target = x(len, 't');
        line(
            &mut d,
            &format!("/sym_{len}"),
            len as u64,
            0o120777,
            (0, 0),
            0,
            (1000, 123),
            (&target, "-", "-"),
            &[],
        );
    }
    d
}

/// Directories of one entry, of exactly one block, of several blocks and with tails on either
/// side of half a block; long names; a deep chain.
fn directories() -> String {
    let mut d = String::new();
    dir(&mut d, "/", (1000, 0), &[]);
    dir(&mut d, "/one", (1000, 0), &[]);
    inline(&mut d, "/one/only", b"", (1000, 0), &[]);
    for (name, count, len) in [
        ("many", 700, 20),
        ("half", 120, 5),
        ("long", 40, 255),
        ("fits", 340, 0),
    ] {
        let dir_path = format!("/{name}");
        dir(&mut d, &dir_path, (1000, 0), &[]);
        for i in 0..count {
            let entry = format!("{dir_path}/{i:04}{}", x(len.max(5) - 4, 'n'));
            if i % 3 == 0 {
                dir(&mut d, &entry, (1000, 0), &[]);
            } else {
                inline(&mut d, &entry, b"", (1000, 0), &[]);
            }
        }
    }
    let mut path = String::from("/deep");
    for i in 0..200 {
        dir(&mut d, &path, (1000, i), &[]);
        path.push_str(&format!("/{}", i % 10));
    }
    inline(&mut d, &path, b"bottom", (1000, 0), &[]);
    d
}

#[test]
fn generated_dumpfiles_give_the_crates_bytes_and_round_trip() {
    for (what, dump) in [
        ("hard links", hard_links()),
        ("whiteouts", whiteouts()),
        ("xattrs", xattrs()),
        ("file types and sizes", file_types_and_sizes()),
        ("directories", directories()),
    ] {
        check_dump(&dump, what, true);
    }
    // Source whiteouts in the root with names of the stubs' form: one with a stub's metadata
    // (V0/V1 take it for the stub), one escaped; the source's own overlay markers on the root
    // and `user.overlay.*` xattrs. Composefs' readers take both whiteouts for stubs and do
    // not show the markers: no round trip.
    let mut d = String::new();
    let label = ("security.selinux", "system_u:object_r:root_t:s0");
    dir(
        &mut d,
        "/",
        (1000, 5),
        &[
            label,
            ("trusted.overlay.opaque", "y"),
            ("user.overlay.opaque", "x"),
        ],
    );
    inline(
        &mut d,
        "/marked",
        b"m",
        (1000, 5),
        &[
            ("user.overlay.whiteout", ""),
            ("trusted.overlay.whiteout", ""),
        ],
    );
    line(
        &mut d,
        "/0a",
        0,
        0o20644,
        (0, 0),
        0,
        (1000, 5),
        ("-", "-", "-"),
        &[label],
    );
    line(
        &mut d,
        "/0b",
        0,
        0o20600,
        (0, 0),
        0,
        (1000, 0),
        ("-", "-", "-"),
        &[],
    );
    check_dump(&d, "a whiteout named like a stub", false);
}

/// Many inodes with enough xattrs and long symlinks that inodes land at every offset in a
/// block: every padding rule is met somewhere.
#[test]
fn inodes_at_every_offset_give_the_crates_bytes() {
    let mut d = String::new();
    dir(&mut d, "/", (1000, 0), &[]);
    for i in 0..300usize {
        let value = x(i * 7 % 400, 'v');
        let xattrs = [("user.v", value.as_str())];
        let path = format!("/n{i:03}");
        match i % 5 {
            0 => line(
                &mut d,
                &path,
                ((i * 37) % 1000 + 1) as u64,
                0o120777,
                (0, 0),
                0,
                (1000, 0),
                (&x((i * 37) % 1000 + 1, 's'), "-", "-"),
                &xattrs,
            ),
            1 => inline(
                &mut d,
                &path,
                &vec![b'c'; i % 64 + 1],
                (1000, (i % 2) as u32),
                &xattrs,
            ),
            2 => external(&mut d, &path, (i as u64) << 30, i as u8, &xattrs),
            3 => {
                dir(&mut d, &path, (1000, 0), &xattrs);
                for j in 0..(i % 90) {
                    inline(
                        &mut d,
                        &format!("{path}/{j:02}{}", x(i % 50, 'e')),
                        b"",
                        (1000, 0),
                        &[],
                    );
                }
            }
            _ => line(
                &mut d,
                &path,
                0,
                0o10644,
                (0, 0),
                0,
                (1000, 0),
                ("-", "-", "-"),
                &xattrs,
            ),
        }
    }
    check_dump(&d, "inodes at every offset", true);
}

/// A dumpfile of the tree under `root` as read by `lstat`, `readlink` and the xattr calls:
/// files over 64 bytes named by their fs-verity digest, hard links as links.
fn dumpfile_of(root: &Path) -> String {
    /// `field`: a space-separated field, where `-` means empty; xattr names and values are
    /// literal (names escape `=`).
    fn esc(bytes: &[u8], field: bool, xattr_name: bool) -> String {
        if field && bytes.is_empty() {
            return "-".into();
        }
        if field && bytes == b"-" {
            return "\\x2d".into();
        }
        let mut out = String::new();
        for &b in bytes {
            if (b.is_ascii_alphanumeric() || b.is_ascii_punctuation())
                && b != b'\\'
                && !(xattr_name && b == b'=')
            {
                out.push(b as char);
            } else {
                write!(out, "\\x{b:02x}").unwrap();
            }
        }
        out
    }
    let mut out = String::new();
    let mut seen = std::collections::HashMap::new();
    for entry in tree::walk(root) {
        let path = esc(&entry.path, true, false);
        let file_type = entry.file_type();
        if file_type != tree::S_IFDIR && entry.nlink > 1 {
            if let Some(first) = seen.get(&entry.ino) {
                writeln!(out, "{path} 0 @100000 - - - - 0.0 {first} - -").unwrap();
                continue;
            }
            seen.insert(entry.ino, path.clone());
        }
        let (size, payload, content, digest) = match file_type {
            tree::S_IFREG => {
                let abs = root.join(std::ffi::OsStr::from_bytes(&entry.path[1..]));
                let content = std::fs::read(abs).unwrap();
                if content.len() > 64 {
                    let hex = verity(&content);
                    let payload = format!("{}/{}", &hex[..2], &hex[2..]);
                    (content.len() as u64, payload, "-".into(), hex)
                } else {
                    (
                        content.len() as u64,
                        "-".into(),
                        esc(&content, true, false),
                        "-".into(),
                    )
                }
            }
            tree::S_IFLNK => {
                let target = entry.symlink.clone().unwrap();
                (
                    target.len() as u64,
                    esc(&target, true, false),
                    "-".into(),
                    "-".into(),
                )
            }
            _ => (0, "-".into(), "-".into(), "-".into()),
        };
        let rdev = rustix::fs::makedev(entry.rdev_major, entry.rdev_minor);
        write!(
            out,
            "{path} {size} {:o} {} {} {} {rdev} {}.{} {payload} {content} {digest}",
            entry.mode,
            entry.nlink,
            entry.uid,
            entry.gid,
            // The crate's reader takes unsigned seconds, and stores their 64 bits.
            entry.mtime as u64,
            entry.mtime_nsec
        )
        .unwrap();
        for (name, value) in &entry.xattrs {
            write!(
                out,
                " {}={}",
                esc(name, false, true),
                esc(value, false, false)
            )
            .unwrap();
        }
        out.push('\n');
    }
    out
}

#[test]
fn create_dir_gives_the_crates_bytes_for_the_tree_it_read() {
    let td = tempfile::tempdir().unwrap();
    let source = td.path().join("source");
    fixtures::rich_tree(&source);
    let edges = source.join("create_edges");
    std::fs::create_dir(&edges).unwrap();
    for size in [63, 64, 65, 4096, 4097, 70000] {
        let name = format!("size_{size}");
        std::fs::write(edges.join(&name), fixtures::pseudo_random(&name, size)).unwrap();
    }
    std::fs::write(edges.join("original"), b"linked").unwrap();
    std::fs::hard_link(edges.join("original"), source.join("a_link")).unwrap();
    let mut deep = edges.join("deep");
    for i in 0..60 {
        deep.push(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"bottom of the chain\n").unwrap();
    // The crate's dumpfile reader refuses symlink targets over 1024 bytes (XFS' limit);
    // lazycfs takes them up to 4095.
    for link in std::fs::read_dir(source.join("links")).unwrap() {
        let link = link.unwrap().path();
        if std::fs::read_link(&link).is_ok_and(|t| t.as_os_str().len() > 1024) {
            std::fs::remove_file(&link).unwrap();
        }
    }
    let dump = dumpfile_of(&source);
    for (version, format) in FORMATS {
        let image = td.path().join(format!("{format}.cfs"));
        let ours = create_dir_ok(&source, &image, format);
        assert_same_image(
            &ours,
            &cfs::write_image(&dump, version),
            &format!("create DIR --format {format}"),
        );
    }
}

/// A bad dumpfile line: exit status 4, one line naming the line and what is wrong, and no
/// image (nor temporary file) left.
#[test]
fn bad_dumpfile_lines_are_one_error_naming_the_line() {
    let root = "/ 0 40755 2 0 0 0 1000.0 - - -\n";
    let file = "/f 5 100644 1 0 0 0 1000.0 - hello -\n";
    let cases: &[(String, &str)] = &[
        (
            format!("{root}/a 0 100644 1 0 0\n"),
            "line 2: the line ends before its rdev field",
        ),
        (
            format!("{root}/a 0 100644 1 0 0 0 1000 - - -\n"),
            "line 2: mtime 1000: not SECONDS.NANOSECONDS",
        ),
        (
            format!("{root}/a 0 100644 1 0 0 0 1000.1000000000 - - -\n"),
            "line 2: mtime 1000.1000000000: nanoseconds over 999999999",
        ),
        (
            format!("{root}/a 0 10064x 1 0 0 0 1000.0 - - -\n"),
            "line 2: mode 10064x: not an octal mode",
        ),
        (
            format!("{root}/a\\x2fb 0 100644 1 0 0 0 1000.0 - - -\n"),
            "line 2: path /a\\x2fb: a name containing /",
        ),
        (
            format!("{root}/a\\x00b 0 100644 1 0 0 0 1000.0 - - -\n"),
            "line 2: path /a\\x00b: a name containing a NUL byte",
        ),
        (
            format!("{root}/a//b 0 100644 1 0 0 0 1000.0 - - -\n"),
            "line 2: path /a//b: an empty name (// or a trailing /)",
        ),
        (
            format!("{root}/../b 0 100644 1 0 0 0 1000.0 - - -\n"),
            "line 2: path /../b: a . or .. name",
        ),
        (
            format!("{root}/a 18446744073709551616 100644 1 0 0 0 1000.0 - - -\n"),
            "line 2: size 18446744073709551616: not a number that fits",
        ),
        (
            format!("{root}/a 0 100644 1 4294967296 0 0 1000.0 - - -\n"),
            "line 2: uid 4294967296: not a number that fits",
        ),
        (
            format!("{root}/a 4 100644 1 0 0 0 1000.0 - hello -\n"),
            "line 2: /a: size 4 does not match its 5 bytes of content",
        ),
        (
            format!("{root}/a 0 20644 1 0 0 4294967296 1000.0 - - -\n"),
            "line 2: /a: device number 4294967296 does not fit in 32 bits",
        ),
        (
            format!("{root}/a 0 170644 1 0 0 0 1000.0 - - -\n"),
            "line 2: /a: unknown file type in mode 170644",
        ),
        (
            format!("{root}/a 0 644 1 0 0 0 1000.0 - - -\n"),
            "line 2: /a: unknown file type in mode 644",
        ),
        (format!("{root}{file}{file}"), "line 3: /f is listed twice"),
        (
            format!("{root}/l 0 @100644 - - - - 0.0 /f - -\n{file}"),
            "line 2: /l is a hard link to /f, which no earlier line lists",
        ),
        (
            format!("{root}/l 0 @100644 - - - - 0.0 /missing - -\n"),
            "line 2: /l is a hard link to /missing, which no earlier line lists",
        ),
        (
            format!("{root}/d 0 40755 2 0 0 0 1000.0 - - -\n/l 0 @100644 - - - - 0.0 /d - -\n"),
            "line 3: /l is a hard link to the directory /d",
        ),
        (
            format!("{root}/w 0 20000 1 0 0 0 1000.0 - - -\n/l 0 @20000 - - - - 0.0 /w - -\n"),
            "line 3: /l is a hard link to the whiteout /w: a whiteout cannot have several links",
        ),
        (
            format!("{root}/x/y 0 100644 1 0 0 0 1000.0 - - -\n"),
            "line 2: /x/y: its directory /x is not listed before it",
        ),
        (
            format!("{root}{file}/f/y 0 100644 1 0 0 0 1000.0 - - -\n"),
            "line 3: /f/y: /f is not a directory",
        ),
        (
            format!("{root}/a 0 100644 1 0 0 0 1000.0 - - - user.a\n"),
            "line 2: xattr user.a: no =",
        ),
        (
            format!("{root}/a 0 100644 1 0 0 0 1000.0 - - - user.a=1 user.a=2\n"),
            "line 2: /a: xattr user.a is given twice",
        ),
        (
            format!("{root}/a 0 100644 1 0 0 0 1000.0 - \\q -\n"),
            "line 2: content: \\q: unknown escape \\q",
        ),
        (
            format!("{root}/a 70 100644 1 0 0 0 1000.0 ab/cd - -\n"),
            "line 2: /a: payload ab/cd is not an object name (xx/<62 hex>) and no digest is given",
        ),
        (
            "/a 0 100644 1 0 0 0 1000.0 - - -\n".to_string(),
            "line 1: the first entry must be the root, /, not /a",
        ),
        (
            String::new(),
            "line 1: no root entry: the dumpfile is empty",
        ),
    ];
    let td = tempfile::tempdir().unwrap();
    let image = td.path().join("image.cfs");
    std::fs::write(&image, b"the previous image").unwrap();
    for (dump, says) in cases {
        let out = create_from_dump(dump.as_bytes(), &image, "v1");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{dump:?}: {stderr}");
        assert_eq!(
            stderr,
            format!("lazycfs create: stdin, {says}\n"),
            "the message for {dump:?}"
        );
        assert_eq!(
            std::fs::read(&image).unwrap(),
            b"the previous image",
            "{dump:?}"
        );
        let names: Vec<_> = std::fs::read_dir(td.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{dump:?}: left {names:?}");
    }
    // A dumpfile that cannot be read is exit 4 too, named by its path.
    let out = Command::new(LAZYCFS)
        .args(["create", "--from-dump"])
        .arg(td.path().join("missing.dump"))
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.dump"));
    // With --from-dump only IMAGE is given, and no objects are stored: bad command lines.
    for args in [
        vec!["create", "--from-dump", "-", "source", "image"],
        vec!["create", "--from-dump", "-", "image", "--objects", "objs"],
    ] {
        let out = Command::new(LAZYCFS).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// The one place lazycfs leaves composefs-rs' layout: a V2 symlink target the crate would
/// leave crossing a block (targets of about 4064 bytes and more, which its dumpfile reader
/// refuses anyway) gets a block of its own, so that the kernel and `check` accept the image.
#[test]
fn v2_long_symlinks_get_a_block_and_read_back() {
    let td = tempfile::tempdir().unwrap();
    let source = td.path().join("source");
    std::fs::create_dir(&source).unwrap();
    let mut targets = Vec::new();
    for len in [1024usize, 4000, 4063, 4064, 4065, 4095] {
        let target = x(len, 't');
        std::os::unix::fs::symlink(&target, source.join(format!("s{len}"))).unwrap();
        targets.push((format!("/s{len}"), target));
    }
    for (_, format) in FORMATS {
        let image = td.path().join(format!("{format}.cfs"));
        create_dir_ok(&source, &image, format);
        let check = Command::new(LAZYCFS)
            .arg("check")
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let dump = cfs::lazycfs_dump(&std::fs::read(&image).unwrap());
        for (path, target) in &targets {
            assert!(
                dump.lines()
                    .any(|l| l.starts_with(&format!("{path} ")) && l.contains(target.as_str())),
                "{format}: {path}"
            );
        }
    }
}
