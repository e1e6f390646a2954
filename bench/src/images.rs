//! The benchmark images: composefs EROFS images written by the `composefs` crate (V1, as
//! `mkcomposefs` writes them) from the corpus dumpfiles and from a synthetic scale series, and
//! the objects directory (basedir) their redirects name.
//!
//! All images share one basedir. Objects are sparse files of the size the dumpfile gives, so
//! they cost no disk; only the few large objects of the read benchmark hold real (pseudo-random)
//! data, and the objects of `host-usr` (the machine's own `/usr` and `/etc`, for the
//! container-start workloads) are hard links to (or copies of) the real files. Images and
//! objects are cached in the work directory between runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use composefs::dumpfile::dumpfile_to_validated_filesystem;
use composefs::dumpfile_parse::Entry;
use composefs::erofs::format::FormatVersion;
use composefs::erofs::writer::mkfs_erofs_versioned;
use composefs::fsverity::Sha256HashValue;

use crate::rng::Rng;

mod host;
use host::host_dump;

/// A benchmark image, built and with its objects in the basedir.
pub struct Image {
    pub name: String,
    pub path: PathBuf,
    /// Entries in the dumpfile (the image's size for the startup plot).
    pub entries: usize,
    /// A deep path (relative to the root) whose `stat` tells that a mount is being served.
    pub probe: PathBuf,
    /// A large directory and its entry names, for the random-lookup benchmark.
    pub big_dir: Option<(PathBuf, Vec<String>)>,
    /// Large files with real content, for the sequential-read benchmark.
    pub large_files: Vec<(PathBuf, u64)>,
    /// A root filesystem to `chroot` into (the container-start workloads), and whether its
    /// `/usr/bin/python3` exists.
    pub chroot: Option<Chroot>,
}

/// What a chroot-able image offers.
pub struct Chroot {
    pub python: bool,
}

/// What to build.
pub enum Recipe {
    /// A corpus dumpfile (cs9 ostree payloads rewritten to composefs objects).
    Corpus { file: &'static str },
    /// Nested directories: `fanout[0]` directories at the root, each with `fanout[1]`, …, and
    /// `files` regular files in each leaf directory. `large` files of `large_size` bytes with
    /// real content go to `/large`.
    Tree {
        fanout: &'static [usize],
        files: usize,
        large: usize,
        large_size: u64,
    },
    /// One directory `/big` with `files` regular files.
    Flat { files: usize },
    /// The machine's own `/usr` and `/etc` (and the root's symlinks into `/usr`): a container
    /// image to chroot into.
    Host,
}

/// The images of a full run (`quick` skips the 1M-entry one and uses smaller read objects).
pub fn recipes(quick: bool) -> Vec<(&'static str, Recipe)> {
    let (large, large_size) = if quick {
        (2, 128 << 20)
    } else {
        (4, 256 << 20)
    };
    let mut list = vec![
        (
            "cs9-minimal",
            Recipe::Corpus {
                file: "cs9-x86_64-minimal.dump.gz",
            },
        ),
        (
            "cs9-developer",
            Recipe::Corpus {
                file: "cs9-x86_64-developer.dump.gz",
            },
        ),
        (
            "tree-10k",
            Recipe::Tree {
                fanout: &[100],
                files: 100,
                large,
                large_size,
            },
        ),
        (
            "tree-100k",
            Recipe::Tree {
                fanout: &[10, 100],
                files: 100,
                large: 0,
                large_size: 0,
            },
        ),
        ("flat-100k", Recipe::Flat { files: 100_000 }),
        ("host-usr", Recipe::Host),
    ];
    if !quick {
        list.push((
            "tree-1M",
            Recipe::Tree {
                fanout: &[100, 100],
                files: 100,
                large: 0,
                large_size: 0,
            },
        ));
    }
    list
}

/// Builds (or reuses) the image `name` in `work/images`, and its objects in `basedir`.
pub fn prepare(
    name: &str,
    recipe: &Recipe,
    corpus: &Path,
    work: &Path,
    basedir: &Path,
) -> anyhow::Result<Image> {
    let dump = match recipe {
        Recipe::Corpus { file } => corpus_dump(corpus, file)?,
        Recipe::Tree {
            fanout,
            files,
            large,
            large_size,
        } => tree_dump(fanout, *files, *large, *large_size),
        Recipe::Flat { files } => flat_dump(*files),
        Recipe::Host => host_dump(Path::new("/"))?,
    };
    if matches!(recipe, Recipe::Host) {
        eprintln!(
            "bench: linking {} objects of {name} into {}",
            dump.objects.len(),
            basedir.display()
        );
    }
    for (payload, object) in &dump.objects {
        object.create(&basedir.join(payload))?;
    }
    let dir = work.join("images");
    fs::create_dir_all(&dir)?;
    // Cached by content: a changed recipe (or --quick) gets its own image.
    let path = dir.join(format!("{name}-{:016x}.cfs", fnv1a(dump.text.as_bytes())));
    if !path.exists() {
        eprintln!("bench: writing image {}", path.display());
        let fs = dumpfile_to_validated_filesystem::<Sha256HashValue>(&dump.text)
            .with_context(|| format!("composefs refuses the dumpfile of {name}"))?;
        let image = mkfs_erofs_versioned(&fs, FormatVersion::V1);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, &image)?;
        fs::rename(&tmp, &path)?;
    }
    Ok(Image {
        name: name.to_string(),
        path,
        entries: dump.entries,
        probe: dump.probe.context("image has no probe path")?,
        big_dir: dump.big_dir,
        large_files: dump.large_files,
        chroot: matches!(recipe, Recipe::Host).then(|| Chroot {
            python: dump.python,
        }),
    })
}

/// An object file in the basedir.
struct Object {
    size: u64,
    /// Real pseudo-random content (read benchmark) instead of a sparse file.
    real: bool,
    /// A host file whose content this is: hard-linked when on the same filesystem, else copied.
    source: Option<PathBuf>,
}

impl Object {
    fn create(&self, path: &Path) -> anyhow::Result<()> {
        if fs::metadata(path).is_ok_and(|m| m.len() == self.size) {
            return Ok(());
        }
        fs::create_dir_all(path.parent().unwrap())?;
        let tmp = path.with_extension("tmp");
        if let Some(source) = &self.source {
            let _ = fs::remove_file(&tmp);
            if fs::hard_link(source, &tmp).is_err() {
                fs::copy(source, &tmp)
                    .with_context(|| format!("copying {} to the basedir", source.display()))?;
            }
            fs::rename(&tmp, path)?;
            return Ok(());
        }
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        if self.real {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let mut rng = Rng::new(self.size ^ path.as_os_str().len() as u64);
            let mut block = vec![0u8; 1 << 20];
            let mut left = self.size;
            while left > 0 {
                rng.fill(&mut block);
                let n = left.min(block.len() as u64);
                out.write_all(&block[..n as usize])?;
                left -= n;
            }
            out.flush()?;
        } else {
            file.set_len(self.size)?;
        }
        fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// A dumpfile being written, with what the benchmark needs to know about it.
#[derive(Default)]
struct Dump {
    text: String,
    entries: usize,
    /// Object path (`xx/yyyy…`, relative to the basedir) → object.
    objects: BTreeMap<String, Object>,
    probe: Option<PathBuf>,
    big_dir: Option<(PathBuf, Vec<String>)>,
    large_files: Vec<(PathBuf, u64)>,
    /// Whether `/usr/bin/python3` is in the image (host-usr).
    python: bool,
}

/// The SELinux label every synthetic entry carries (shared xattr, as in real images).
const LABEL: &str = "security.selinux=system_u:object_r:usr_t:s0";

impl Dump {
    fn dir(&mut self, path: &str) {
        self.line(format_args!(
            "{path} 0 40755 2 0 0 0 1700000000.0 - - - {LABEL}"
        ));
    }

    /// A regular file whose content is the object `id` (a 64-hex fake digest).
    fn file(&mut self, path: &str, id: &str, size: u64, real: bool) {
        let payload = format!("{}/{}", &id[..2], &id[2..]);
        self.line(format_args!(
            "{path} {size} 100644 1 0 0 0 1700000000.0 {payload} - {id} {LABEL} user.bench=x"
        ));
        self.objects.insert(
            payload,
            Object {
                size,
                real,
                source: None,
            },
        );
    }

    fn line(&mut self, line: std::fmt::Arguments) {
        writeln!(self.text, "{line}").unwrap();
        self.entries += 1;
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A fake object digest: 64 hex digits derived from `seed`.
fn object_id(seed: u64) -> String {
    let mut rng = Rng::new(seed);
    (0..4).map(|_| format!("{:016x}", rng.next())).collect()
}

/// Synthetic files share 4096 distinct objects (content-addressed images dedup), 0–64 KiB.
fn shared_object(i: usize) -> (String, u64) {
    let k = (i % 4096) as u64;
    (object_id(k), (k * 7919) % 65536)
}

fn tree_dump(fanout: &[usize], files: usize, large: usize, large_size: u64) -> Dump {
    let mut dump = Dump::default();
    dump.dir("/");
    let mut counter = 0;
    tree_level(&mut dump, "", fanout, files, &mut counter);
    if large > 0 {
        dump.dir("/large");
        for k in 0..large {
            let path = format!("/large/blob-{k}");
            dump.file(
                &path,
                &object_id(large_size << 8 | k as u64),
                large_size,
                true,
            );
            dump.large_files
                .push((PathBuf::from(&path[1..]), large_size));
        }
    }
    dump
}

fn tree_level(dump: &mut Dump, parent: &str, fanout: &[usize], files: usize, counter: &mut usize) {
    match fanout.split_first() {
        Some((&n, rest)) => {
            for d in 0..n {
                let dir = format!("{parent}/d{d:03}");
                dump.dir(&dir);
                tree_level(dump, &dir, rest, files, counter);
            }
        }
        None => {
            for f in 0..files {
                let path = format!("{parent}/file-{f:03}");
                let (id, size) = shared_object(*counter);
                *counter += 1;
                dump.file(&path, &id, size, false);
                dump.probe = Some(PathBuf::from(&path[1..]));
            }
        }
    }
}

fn flat_dump(files: usize) -> Dump {
    let mut dump = Dump::default();
    dump.dir("/");
    dump.dir("/big");
    let mut rng = Rng::new(0x5eed);
    // Names of varying length in no particular order, as in a real large directory.
    let mut names: Vec<String> = (0..files)
        .map(|i| format!("{:0w$x}-{i}", rng.next(), w = 4 + i % 12))
        .collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let (id, size) = shared_object(i);
        dump.file(&format!("/big/{name}"), &id, size, false);
    }
    dump.probe = Some(PathBuf::from("big").join(&names[files / 2]));
    dump.big_dir = Some((PathBuf::from("big"), names));
    dump
}

/// A corpus dumpfile prepared for the composefs writer (the logic of the lazycfs tests'
/// `corpus_dump`): cs9's ostree payloads `xx/<62 hex>.file` become object `xx/<62 hex>` with
/// the 64 hex as digest, and lines the writer refuses are dropped.
fn corpus_dump(corpus: &Path, file: &str) -> anyhow::Result<Dump> {
    let path = corpus.join(file);
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .context("running gzip")?;
    ensure!(out.status.success(), "gzip -dc {} failed", path.display());
    let raw = String::from_utf8(out.stdout).context("dumpfiles are ASCII")?;

    let mut dump = Dump::default();
    let mut probe_depth = 0;
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        let line = rewrite_ostree_payload(line);
        if Entry::parse(&line).is_err() {
            if dump.text.is_empty() {
                bail!("{file}: the writer refuses the root entry");
            }
            continue;
        }
        let fields: Vec<&str> = line.splitn(12, ' ').collect();
        let (path, mode) = (fields[0], fields[2]);
        let regular = u32::from_str_radix(mode, 8).is_ok_and(|m| m & 0o170000 == 0o100000);
        if regular && fields[8] != "-" && fields[9] == "-" {
            let size = fields[1].parse().context("size")?;
            let payload = fields[8].trim_start_matches('/').to_string();
            dump.objects.insert(
                payload,
                Object {
                    size,
                    real: false,
                    source: None,
                },
            );
        }
        let depth = path.matches('/').count();
        if regular && depth > probe_depth && !path.contains('\\') {
            probe_depth = depth;
            dump.probe = Some(PathBuf::from(&path[1..]));
        }
        dump.text.push_str(&line);
        dump.text.push('\n');
        dump.entries += 1;
    }
    Ok(dump)
}

fn rewrite_ostree_payload(line: &str) -> String {
    let fields: Vec<&str> = line.splitn(12, ' ').collect();
    if fields.len() >= 11 && !fields[2].starts_with('@') && fields[8].ends_with(".file") {
        let object = fields[8].trim_end_matches(".file");
        let digest = object.replace('/', "");
        let mut f = fields.clone();
        f[8] = object;
        f[10] = &digest;
        f.join(" ")
    } else {
        line.to_string()
    }
}
