//! Running lazycfs as an unprivileged user, the way podman users do: uid 65534 with a
//! subordinate id range (`/etc/subuid`, `/etc/subgid`, `newuidmap`), entering a user + mount
//! namespace with `unshare --map-root-user --map-users=...`, so image ids 0..131071 are
//! mapped. Walks done inside come back to the test as text ([`to_text`], [`from_text`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::tree::Entry;

/// The unprivileged user tests run as.
pub const USER: u32 = 65534;
/// Image ids 0..ID_COUNT are mapped inside the namespace (fixtures use ids above 65535).
pub const ID_COUNT: u32 = 131072;

/// True if rootless tests can run: root (to set up /etc/subuid), `newuidmap`, an accessible
/// `/dev/fuse`. Otherwise skips (panics under `CI`).
pub fn require(test: &str) -> bool {
    if !super::kernel::require_root(test) {
        return false;
    }
    if !Path::new("/usr/bin/newuidmap").exists() {
        super::skip(test, "newuidmap missing (Debian package uidmap)");
        return false;
    }
    let fuse_mode = std::fs::metadata("/dev/fuse").map(|m| m.permissions().mode());
    if !fuse_mode.is_ok_and(|m| m & 0o006 == 0o006) {
        super::skip(
            test,
            "/dev/fuse is not accessible to other users (CI makes it 0666)",
        );
        return false;
    }
    true
}

/// The subordinate range of [`USER`] in `file` (`/etc/subuid` or `/etc/subgid`), added if
/// missing.
fn subordinate_range(file: &str) -> io::Result<u32> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let names = [USER.to_string(), "nobody".to_string()];
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if let [name, start, count] = fields[..] {
            if names.iter().any(|n| n == name) && count.parse::<u32>().unwrap_or(0) >= ID_COUNT {
                return start
                    .parse()
                    .map_err(|_| io::Error::other(format!("{file}: bad line {line:?}")));
            }
        }
    }
    let start = 200_000;
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{USER}:{start}:{ID_COUNT}\n"));
    std::fs::write(file, text)?;
    Ok(start)
}

/// Makes sure [`USER`] has subordinate uid and gid ranges of [`ID_COUNT`] ids.
pub fn ensure_subordinate_ids() {
    subordinate_range("/etc/subuid").expect("/etc/subuid");
    subordinate_range("/etc/subgid").expect("/etc/subgid");
}

/// A command run as [`USER`] inside a fresh user + mount namespace where it is root and ids
/// 1..ID_COUNT map to its subordinate range.
pub fn in_user_namespace(program: &Path) -> Command {
    let uid_start = subordinate_range("/etc/subuid").expect("/etc/subuid");
    let gid_start = subordinate_range("/etc/subgid").expect("/etc/subgid");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .args(["--clear-groups", "unshare", "--map-root-user"])
        .arg(format!("--map-users={uid_start},1,{}", ID_COUNT - 1))
        .arg(format!("--map-groups={gid_start},1,{}", ID_COUNT - 1))
        .args(["--mount", "--"])
        .arg(program);
    cmd
}

/// A command run as [`USER`] with no namespace (plain unprivileged).
pub fn as_user(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .args(["--clear-groups", "--"])
        .arg(program);
    cmd
}

/// A directory [`USER`] can write to (and everyone read).
pub fn user_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lazycfs-rootless")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    rustix::fs::chown(
        dir.path(),
        Some(rustix::fs::Uid::from_raw(USER)),
        Some(rustix::fs::Gid::from_raw(USER)),
    )
    .unwrap();
    dir
}

/// Makes `path` and everything under it readable by all (fixtures built by root in 0700
/// temporary directories).
pub fn make_readable(path: &Path) {
    let mut p = PathBuf::new();
    for c in path.components() {
        p.push(c);
        if let Ok(md) = std::fs::metadata(&p) {
            if md.is_dir() {
                let mode = md.permissions().mode() | 0o755;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
            }
        }
    }
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(path)
        .status();
}

/// `lazycfs run IMAGE --basedir BASEDIR [extra] -- <this test binary> walk_helper` as the
/// unprivileged user in its namespace; returns the walk and lazycfs's stderr.
pub fn walk_in_run(
    lazycfs: &Path,
    image: &Path,
    basedir: &Path,
    extra: &[&str],
) -> Result<(Vec<Entry>, String), String> {
    let out_dir = user_dir();
    let out = out_dir.path().join("walk.txt");
    let test_exe = std::env::current_exe().unwrap();
    let output: Output = in_user_namespace(lazycfs)
        .args(["-v", "run"])
        .arg(image)
        .arg("--basedir")
        .arg(basedir)
        .args(extra)
        .arg("--")
        .arg(&test_exe)
        .args([
            "--exact",
            "walk_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LAZYCFS_WALK_OUT", &out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(format!(
            "lazycfs run failed ({}): {stderr}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{e}; stderr: {stderr}"))?;
    Ok((from_text(&text), stderr))
}

/// Body of the (ignored) `walk_helper` test, which [`walk_in_run`] runs: walks the working
/// directory and writes the walk to the file `LAZYCFS_WALK_OUT` names.
pub fn walk_helper() {
    let out = std::env::var_os("LAZYCFS_WALK_OUT").expect("LAZYCFS_WALK_OUT names the output");
    let cwd = std::env::current_dir().unwrap();
    let walk = fingerprint(super::tree::walk(&cwd));
    std::fs::write(out, to_text(&walk)).unwrap();
}

/// Replaces file contents by their length and hash (so walks of large trees stay small).
pub fn fingerprint(mut entries: Vec<Entry>) -> Vec<Entry> {
    for entry in &mut entries {
        if let Some(content) = &entry.content {
            let mut hasher = DefaultHasher::new();
            content.hash(&mut hasher);
            entry.content =
                Some(format!("{} bytes, {:016x}", content.len(), hasher.finish()).into_bytes());
        }
    }
    entries
}

/// The walk a namespace root's walk in a rootless mount of `image` must equal: root's walk of
/// the rootful kernel composefs mount of `image` and `basedir` (both made readable to
/// [`USER`] first), fingerprinted, minus the `trusted.*` xattrs an unprivileged caller never
/// sees.
pub fn rootful_reference(what: &str, image: &Path, basedir: &Path) -> Vec<Entry> {
    make_readable(image);
    make_readable(basedir);
    let reference = super::kernel::KernelMount::composefs(image, basedir)
        .unwrap_or_else(|e| panic!("{what}: kernel composefs mount: {e}"));
    without_trusted_xattrs(fingerprint(super::tree::walk(reference.path())))
}

/// Drops the xattrs an unprivileged caller cannot see (`trusted.*`).
pub fn without_trusted_xattrs(mut entries: Vec<Entry>) -> Vec<Entry> {
    for entry in &mut entries {
        entry
            .xattrs
            .retain(|(name, _)| !name.starts_with(b"trusted."));
    }
    entries
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "_".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "_" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn opt_hex(b: &Option<Vec<u8>>) -> String {
    b.as_deref().map_or("-".into(), hex)
}

fn opt_unhex(s: &str) -> Option<Vec<u8>> {
    (s != "-").then(|| unhex(s))
}

/// One line per entry, space-separated fields, bytes in hex.
pub fn to_text(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let xattrs: Vec<String> = e
            .xattrs
            .iter()
            .map(|(n, v)| format!("{}={}", hex(n), hex(v)))
            .collect();
        let children = e.children.as_ref().map_or("-".into(), |c| {
            let list: Vec<String> = c.iter().map(|(n, t)| format!("{}:{t}", hex(n))).collect();
            format!("[{}]", list.join(","))
        });
        out.push_str(&format!(
            "{} {} {} {} {} {} {} {} {} {} {} {} [{}] {} {}\n",
            hex(&e.path),
            e.ino,
            e.mode,
            e.uid,
            e.gid,
            e.size,
            e.nlink,
            e.mtime,
            e.mtime_nsec,
            e.rdev_major,
            e.rdev_minor,
            opt_hex(&e.symlink),
            xattrs.join(","),
            opt_hex(&e.content),
            children
        ));
    }
    out
}

/// The inverse of [`to_text`].
pub fn from_text(text: &str) -> Vec<Entry> {
    let list = |s: &str| -> Vec<String> {
        let inner = &s[1..s.len() - 1];
        if inner.is_empty() {
            Vec::new()
        } else {
            inner.split(',').map(str::to_string).collect()
        }
    };
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| f[i].parse::<i64>().unwrap();
            Entry {
                path: unhex(f[0]),
                ino: f[1].parse().unwrap(),
                mode: num(2) as u32,
                uid: num(3) as u32,
                gid: num(4) as u32,
                size: f[5].parse().unwrap(),
                nlink: f[6].parse().unwrap(),
                mtime: num(7),
                mtime_nsec: num(8) as u32,
                rdev_major: num(9) as u32,
                rdev_minor: num(10) as u32,
                symlink: opt_unhex(f[11]),
                xattrs: list(f[12])
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (unhex(k), unhex(v))
                    })
                    .collect(),
                content: opt_unhex(f[13]),
                children: (f[14] != "-").then(|| {
                    list(f[14])
                        .iter()
                        .map(|nt| {
                            let (n, t) = nt.split_once(':').unwrap();
                            (unhex(n), t.parse().unwrap())
                        })
                        .collect()
                }),
            }
        })
        .collect()
}
