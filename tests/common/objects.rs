//! Basedirs (objects directories) for composefs images: one object per redirect, with
//! deterministic content (sparse beyond 1 MiB so huge files cost nothing).

use std::path::Path;

use lazycfs::erofs::{FileType, Image};

/// Creates every object the image's redirects name under `basedir`; returns how many.
pub fn populate(image: &Image, basedir: &Path) -> usize {
    let mut count = 0;
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
                count += 1;
            }
            _ => {}
        }
    }
    count
}
