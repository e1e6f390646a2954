//! `lazycfs create`: a composefs image of a directory tree, and its objects.
//!
//! The tree is read once (`tree`); each regular file over 64 bytes is hashed (its fs-verity
//! digest, [`verity`]) and stored as an object by worker threads while the walk goes on
//! (`store`); then the image is laid out and written (`inodes`, `erofs`).
//!
//! `--from-dump` reads the tree from a composefs dumpfile instead (`dumpfile`); nothing is
//! hashed or stored then.
//!
//! The writer is our own rather than the `composefs` crate's: that crate needs OpenSSL
//! (`libssl-dev` and `pkg-config` to build, which a fresh machine running `cargo install`
//! lacks), tokio, zstd and a newer Rust than lazycfs's, and builds the whole tree in memory
//! in its own model. It follows that crate's layout rule by rule, so that the same tree gives
//! the same bytes (and fs-verity digest) in each format; `tests/create_reference.rs` compares
//! them.

mod dumpfile;
mod erofs;
mod inodes;
mod store;
mod tree;
pub mod verity;
mod xattrs;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

use store::ObjectStore;
use tree::FileJob;
pub use tree::INLINE_MAX;
use verity::FsVerityHasher;

/// The composefs image format versions (composefs-rs' `FormatVersion`, `mkcomposefs
/// --min-version`). They read back the same; they differ in layout details. Each gives the
/// bytes composefs-rs 0.9.4 writes for the same tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `mkcomposefs`'s default: compact inodes where they fit, breadth-first inode order, the
    /// `00`..`ff` whiteout stubs in the root; header composefs version 0. (On a tree with
    /// whiteouts `mkcomposefs` writes version 1 instead, which is [`Format::V1`].)
    V0,
    /// V0's layout with header composefs version 1 and escaped whiteouts' directories marked
    /// opaque (`mkcomposefs --min-version=1`, composefs-rs' default).
    #[default]
    V1,
    /// composefs-rs's earlier format: extended inodes, depth-first order, no stubs, no
    /// nanoseconds, composefs version 2.
    V2,
}

/// How to create an image.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// The format version.
    pub format: Format,
    /// Hashing threads (default: two per CPU, so that reads overlap on a cold cache).
    pub threads: Option<usize>,
}

/// What [`create`] did.
#[derive(Clone, Debug)]
pub struct Created {
    /// The image file's own fs-verity digest (for `mount --digest`).
    pub digest: [u8; 32],
    /// Regular files hashed (those over [`INLINE_MAX`] bytes).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects written by this run.
    pub objects_written: u64,
    /// Objects that were present already.
    pub objects_present: u64,
}

/// Why [`create`] failed. Each kind has its own exit status ([`CreateError::exit_status`]).
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The source is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A source entry cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Source {
        /// The entry.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A source entry cannot be stored in an image.
    #[error("{0}")]
    Unsupported(String),
    /// An object or the image cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Target {
        /// The object or image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A dumpfile line is not a valid entry.
    #[error("{file}, line {line}: {what}")]
    Dumpfile {
        /// The dumpfile (`stdin` for `-`).
        file: String,
        /// Its line number, from 1.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A signal asked to stop.
    #[error("interrupted by signal {0}; no image written (objects stored so far are complete)")]
    Interrupted(i32),
}

impl CreateError {
    fn source(path: &Path, source: io::Error) -> CreateError {
        CreateError::Source {
            path: path.to_path_buf(),
            source,
        }
    }

    fn target(path: &Path, source: io::Error) -> CreateError {
        CreateError::Target {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The exit status `lazycfs create` reports it with: 3 source not a directory, 4 source
    /// unreadable or unstorable (or a bad dumpfile line), 5 objects or image not writable, 6 no space left (or quota),
    /// 128+N killed by signal N.
    pub fn exit_status(&self) -> u8 {
        match self {
            CreateError::NotADirectory(_) => 3,
            CreateError::Source { .. }
            | CreateError::Unsupported(_)
            | CreateError::Dumpfile { .. } => 4,
            CreateError::Target { source, .. } if is_full(source) => 6,
            CreateError::Target { .. } => 5,
            CreateError::Interrupted(signal) => 128u8.saturating_add(*signal as u8),
        }
    }
}

fn is_full(e: &io::Error) -> bool {
    let full = [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT];
    full.iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// Hex of a digest, lower case.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Progress callbacks: called from the hashing threads.
pub trait Progress: Sync {
    /// A file of `size` bytes was found and will be hashed.
    fn found(&self, size: u64);
    /// `bytes` more bytes were hashed.
    fn hashed(&self, bytes: u64);
    /// A file is done.
    fn file_done(&self);
}

/// No progress report.
impl Progress for () {
    fn found(&self, _: u64) {}
    fn hashed(&self, _: u64) {}
    fn file_done(&self) {}
}

/// Writes the composefs image of `source` to `image`, storing objects under `objects` (none
/// with `None`: digests only). `stop` is polled: a nonzero value (a signal number) abandons
/// the work, leaving no image and no partial object.
pub fn create(
    source: &Path,
    image: &Path,
    objects: Option<&Path>,
    options: &CreateOptions,
    stop: &AtomicUsize,
    progress: &dyn Progress,
) -> Result<Created, CreateError> {
    let meta = std::fs::metadata(source).map_err(|e| CreateError::source(source, e))?;
    if !meta.is_dir() {
        return Err(CreateError::NotADirectory(source.to_path_buf()));
    }
    let store = objects.map(ObjectStore::open).transpose()?;
    // Made first, so that an unwritable destination fails before the work.
    let mut output = PendingImage::new(image)?;
    // What this run writes stays out of the image when it is inside the source.
    let mut skip = Vec::new();
    for path in [Some(image), Some(output.temporary.as_path()), objects]
        .into_iter()
        .flatten()
    {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            skip.push((meta.dev(), meta.ino()));
        }
    }
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| 2 * n.get()));
    let (tree, objects_by_job) =
        scan_and_hash(source, &skip, store.as_ref(), threads, stop, progress)?;
    let inodes = inodes::collect(&tree, &objects_by_job, options.format)?;
    let bytes = erofs::write(&inodes, options.format)?;
    if let Some(store) = &store {
        store.sync()?;
    }
    output.finish(&bytes, stop)?;
    Ok(Created {
        digest: FsVerityHasher::digest(&bytes),
        files: objects_by_job.len() as u64,
        bytes: objects_by_job.iter().map(|(_, size)| size).sum(),
        objects_written: store
            .as_ref()
            .map_or(0, |s| s.written.load(Ordering::Relaxed)),
        objects_present: store
            .as_ref()
            .map_or(0, |s| s.present.load(Ordering::Relaxed)),
    })
}

/// A hashed file's fs-verity digest and size.
type Hashed = ([u8; 32], u64);

/// Walks `source` (leaving out `skip`) while `threads` workers hash each file and store its
/// object in `store`: the tree, and each file job's digest and size by job index.
fn scan_and_hash(
    source: &Path,
    skip: &[(u64, u64)],
    store: Option<&ObjectStore>,
    threads: usize,
    stop: &AtomicUsize,
    progress: &dyn Progress,
) -> Result<(tree::Tree, Vec<Hashed>), CreateError> {
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let fail = |e: CreateError| {
        failed.store(true, Ordering::Relaxed);
        first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
    };
    let (job_tx, job_rx) = mpsc::sync_channel::<FileJob>(4096);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel();
    let quit = || failed.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) != 0;
    let scanned = std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let done_tx = done_tx.clone();
            let (job_rx, fail) = (&job_rx, &fail);
            scope.spawn(move || {
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let Ok(job) = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else {
                        return;
                    };
                    // After a failure, drain the queue so the walk never blocks.
                    if quit() {
                        continue;
                    }
                    match hash_and_store(&job, store, &mut buffer, &quit, progress) {
                        Ok(Some(done)) => {
                            let _ = done_tx.send((job.index, done));
                        }
                        Ok(None) => {}
                        Err(e) => fail(e),
                    }
                }
            });
        }
        drop(done_tx);
        let scanned = tree::scan(source, skip, &quit, |job| {
            progress.found(job.size);
            let _ = job_tx.send(job);
        });
        drop(job_tx);
        scanned
    });
    let signal = stop.load(Ordering::Relaxed);
    if signal != 0 {
        return Err(CreateError::Interrupted(signal as i32));
    }
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let tree = scanned?;
    let mut objects_by_job: Vec<Hashed> = Vec::new();
    for (index, done) in done_rx {
        if objects_by_job.len() <= index {
            objects_by_job.resize(index + 1, ([0; 32], 0));
        }
        objects_by_job[index] = done;
    }
    Ok((tree, objects_by_job))
}

/// Writes the composefs image of the dumpfile `source` (composefs-dump(5); `-` reads stdin)
/// to `image`, as `mkcomposefs --from-file` does. The dumpfile names the objects: none is
/// read or stored. A bad line leaves no image.
pub fn create_from_dump(
    source: &Path,
    image: &Path,
    options: &CreateOptions,
    stop: &AtomicUsize,
) -> Result<Created, CreateError> {
    let mut output = PendingImage::new(image)?;
    let (text, name) = if source == Path::new("-") {
        let mut text = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut text)
            .map_err(|e| CreateError::source(source, e))?;
        (text, "stdin".to_string())
    } else {
        let text = std::fs::read(source).map_err(|e| CreateError::source(source, e))?;
        (text, source.display().to_string())
    };
    let tree = dumpfile::parse(&text, &name)?;
    drop(text);
    let signal = stop.load(Ordering::Relaxed);
    if signal != 0 {
        return Err(CreateError::Interrupted(signal as i32));
    }
    let (files, bytes) = object_totals(&tree);
    let bytes_out = write_tree(&tree, options.format)?;
    output.finish(&bytes_out, stop)?;
    Ok(Created {
        digest: FsVerityHasher::digest(&bytes_out),
        files,
        bytes,
        objects_written: 0,
        objects_present: 0,
    })
}

/// The composefs image of a dumpfile held in memory (`name` is what errors call it), as
/// [`create_from_dump`] writes it. The mount service writes the images the kernel mounts
/// with this, from the dump of a caller's image.
pub fn image_from_dump(text: &[u8], name: &str, format: Format) -> Result<Vec<u8>, CreateError> {
    write_tree(&dumpfile::parse(text, name)?, format)
}

/// As [`image_from_dump`], for an unprivileged overlayfs (`userxattr`) to stack on: the
/// overlay's xattrs are in the `user.overlay.` namespace, as the FUSE overlay view presents
/// them ([`View::OverlayUser`](crate::view::View::OverlayUser)). No reference writer makes
/// these; the mount service mounts them in a caller's own user namespace.
pub fn user_xattr_image_from_dump(
    text: &[u8],
    name: &str,
    format: Format,
) -> Result<Vec<u8>, CreateError> {
    let tree = dumpfile::parse(text, name)?;
    let mut inodes = inodes::collect(&tree, &[], format)?;
    inodes.for_user_xattr_overlay();
    erofs::write(&inodes, format)
}

fn write_tree(tree: &tree::Tree, format: Format) -> Result<Vec<u8>, CreateError> {
    let inodes = inodes::collect(tree, &[], format)?;
    erofs::write(&inodes, format)
}

/// Files whose content is an object, and their bytes.
fn object_totals(tree: &tree::Tree) -> (u64, u64) {
    tree.nodes
        .iter()
        .filter_map(|node| match node.kind {
            tree::Kind::Object { size, .. } => Some(size),
            _ => None,
        })
        .fold((0, 0), |(files, bytes), size| (files + 1, bytes + size))
}

/// Hashes one file and stores its object; `None` if told to quit midway.
fn hash_and_store(
    job: &FileJob,
    store: Option<&ObjectStore>,
    buffer: &mut [u8],
    quit: &dyn Fn() -> bool,
    progress: &dyn Progress,
) -> Result<Option<([u8; 32], u64)>, CreateError> {
    let mut file = File::open(&job.path).map_err(|e| CreateError::source(&job.path, e))?;
    let mut hasher = FsVerityHasher::new();
    let mut size = 0u64;
    loop {
        if quit() {
            return Ok(None);
        }
        let got = match file.read(buffer) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CreateError::source(&job.path, e)),
        };
        hasher.update(&buffer[..got]);
        size += got as u64;
        progress.hashed(got as u64);
    }
    let digest = hasher.finish();
    if let Some(store) = store {
        store.store(&file, &digest, size)?;
    }
    progress.file_done();
    Ok(Some((digest, size)))
}

/// The image being written: a temporary file next to it, renamed over it when complete,
/// removed otherwise.
struct PendingImage {
    path: PathBuf,
    temporary: PathBuf,
    file: Option<File>,
}

impl PendingImage {
    fn new(path: &Path) -> Result<PendingImage, CreateError> {
        let name = path
            .file_name()
            .ok_or_else(|| CreateError::target(path, io::Error::other("not a file name")))?;
        let mut temporary_name = b".".to_vec();
        temporary_name.extend_from_slice(name.as_bytes());
        temporary_name.extend_from_slice(format!(".tmp{}", std::process::id()).as_bytes());
        let temporary = path.with_file_name(std::ffi::OsStr::from_bytes(&temporary_name));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(|e| CreateError::target(path, e))?;
        Ok(PendingImage {
            path: path.to_path_buf(),
            temporary,
            file: Some(file),
        })
    }

    fn finish(&mut self, bytes: &[u8], stop: &AtomicUsize) -> Result<(), CreateError> {
        let mut file = self.file.take().expect("finished once");
        let fail = |e| CreateError::target(&self.path, e);
        file.write_all(bytes).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        let signal = stop.load(Ordering::Relaxed);
        if signal != 0 {
            return Err(CreateError::Interrupted(signal as i32));
        }
        std::fs::rename(&self.temporary, &self.path).map_err(fail)?;
        self.temporary = PathBuf::new();
        Ok(())
    }
}

impl Drop for PendingImage {
    fn drop(&mut self) {
        if !self.temporary.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}
