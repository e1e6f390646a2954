//! Basedirs (objects directories) for composefs images: one object per redirect, with
//! deterministic content (sparse beyond 1 MiB so huge files cost nothing).

use std::collections::BTreeSet;
use std::path::Path;

use composefs::erofs::reader::collect_objects;
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};

use lazycfs::erofs::{FileType, Image};

/// Creates every object the image's redirects name under `basedir` (those already there are
/// kept); returns how many the image names. Panics unless they are the objects the composefs
/// crate's reader collects from the image: a basedir that misses objects (an empty one
/// included) would let a mount that answers EIO "agree" with one that does too.
pub fn populate(image: &Image, basedir: &Path) -> usize {
    let mut named = BTreeSet::new();
    let mut stack = vec![image.root_nid()];
    let mut seen = std::collections::HashSet::new();
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) {
            continue;
        }
        let inode = image.inode(nid).unwrap();
        match inode.file_type() {
            FileType::Directory => {
                for e in inode.dir().unwrap().entries() {
                    let e = e.unwrap();
                    if e.name != b"." && e.name != b".." {
                        stack.push(e.nid);
                    }
                }
            }
            FileType::Regular => {
                let xattrs = inode.xattrs().unwrap();
                let Some(redirect) = xattrs.get(b"trusted.overlay.redirect").unwrap() else {
                    continue;
                };
                let rel = std::str::from_utf8(redirect)
                    .unwrap()
                    .trim_start_matches('/');
                let path = basedir.join(rel);
                named.insert(rel.to_owned());
                if path.exists() {
                    continue;
                }
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let size = inode.size();
                let head = super::fixtures::pseudo_random(rel, size.min(1 << 20) as usize);
                std::fs::write(&path, head).unwrap();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(size)
                    .unwrap();
            }
            _ => {}
        }
    }
    let reference: BTreeSet<String> = collect_objects::<Sha256HashValue>(image.bytes())
        .expect("the composefs reader collects the image's objects")
        .iter()
        .map(|id| id.to_object_pathname())
        .collect();
    assert_eq!(
        named, reference,
        "objects named by redirects vs composefs' reader"
    );
    named.len()
}
