//! Benchmark peer: composefs-fuse 0.7.0, the tree-parsing server.
//!
//! `peer-composefs-fuse-07 IMAGE MOUNTPOINT BASEDIR` parses the whole image into a
//! `composefs::tree::FileSystem` (`erofs_to_filesystem`), mounts FUSE at MOUNTPOINT and serves
//! it with `serve_tree_fuse` in the foreground until killed.
//!
//! 0.7.0 reads file content through a `Repository`, which opens `objects/xx/yyyy…` relative to
//! the repository directory. BASEDIR is a plain objects directory, so the peer creates an
//! insecure (no fs-verity) repository under `$TMPDIR` whose `objects` is a symlink to BASEDIR.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use composefs::erofs::reader::erofs_to_filesystem;
use composefs::fsverity::Sha256HashValue;
use composefs::repository::{Repository, RepositoryConfig};
use composefs_fuse::{FuseMountOptions, mount_fuse, open_fuse, serve_tree_fuse};
use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, move_mount};

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [image, mountpoint, basedir] = args.as_slice() else {
        bail!("usage: peer-composefs-fuse-07 IMAGE MOUNTPOINT BASEDIR");
    };

    let repo = open_repository(basedir)?;
    let data = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let fs = erofs_to_filesystem::<Sha256HashValue>(&data).context("parsing image")?;

    let dev_fuse = open_fuse()?;
    let mnt = mount_fuse(&dev_fuse, &FuseMountOptions::default()).context("mounting fuse")?;
    move_mount(mnt.as_fd(), "", CWD, mountpoint, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .with_context(|| format!("attaching mount at {}", mountpoint.display()))?;
    serve_tree_fuse(dev_fuse, &fs, &repo).context("serving")?;
    Ok(())
}

/// An insecure repository whose `objects` directory is `basedir`.
fn open_repository(basedir: &Path) -> anyhow::Result<Repository<Sha256HashValue>> {
    let basedir = std::fs::canonicalize(basedir)
        .with_context(|| format!("resolving {}", basedir.display()))?;
    let dir = std::env::temp_dir().join(format!("composefs-fuse-0.7-repo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let objects = dir.join("objects");
    if !objects.exists() {
        std::os::unix::fs::symlink(&basedir, &objects).context("linking objects")?;
    }
    let config = RepositoryConfig::default().set_insecure();
    let (repo, _) = Repository::init_path(CWD, &dir, config).context("creating repository")?;
    Ok(repo)
}
