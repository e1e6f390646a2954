//! The tree as the lazycfs decoder sees it, in the same records as a mounted tree
//! ([`super::tree::walk`]), for field-by-field comparison with the kernel.

use lazycfs::erofs::{FileType, Image, Inode};

use super::tree::{CONTENT_LIMIT, Entry, UNREADABLE_XATTR, xattr_error};

/// Walks the image from the root, like `walk` walks a mount of it: entries sorted by path,
/// xattrs as Linux lists them to root (every standard prefix), content of regular files up to
/// [`CONTENT_LIMIT`] bytes.
pub fn walk(image: &Image) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![(image.root_nid(), b"/".to_vec())];
    while let Some((nid, path)) = stack.pop() {
        let inode = image
            .inode(nid)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&path)));
        let entry = record(&inode, path.clone());
        if let Some(children) = &inode.is_dir().then(|| inode.dir().unwrap()) {
            for child in children.entries() {
                let child = child.unwrap();
                if child.name == b"." || child.name == b".." {
                    continue;
                }
                let mut child_path = path.clone();
                if child_path != b"/" {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(child.name);
                stack.push((child.nid, child_path));
            }
        }
        out.push(entry);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// One entry's record.
pub fn record(inode: &Inode<'_>, path: Vec<u8>) -> Entry {
    let (mtime, mtime_nsec) = inode.mtime();
    let (rdev_major, rdev_minor) = inode.rdev();
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = inode
        .xattrs()
        .unwrap()
        .iter()
        .map(|x| x.unwrap())
        .filter(|x| x.name.prefix().is_some())
        .map(|x| {
            // The VFS hides `user.*` values of anything but files and directories.
            let readable = x.name.index != 1
                || matches!(inode.file_type(), FileType::Regular | FileType::Directory);
            let value = if !readable {
                UNREADABLE_XATTR.to_vec()
            } else if x.name.index == 2 || x.name.index == 3 {
                // The kernel parses and re-serializes ACLs.
                match super::posix_acl::kernel_view(x.value) {
                    Ok(Some(v)) => v,
                    Ok(None) => UNREADABLE_XATTR.to_vec(),
                    Err(e) => xattr_error(e.raw_os_error()),
                }
            } else {
                x.value.to_vec()
            };
            (x.name.to_vec(), value)
        })
        .collect();
    xattrs.sort();
    // Data the decoder refuses is `None`, as a mount answering EIO is.
    let content = if inode.file_type() == FileType::Regular {
        let len = inode.size().min(CONTENT_LIMIT) as usize;
        let mut buf = vec![0; len];
        inode.read_at(0, &mut buf).ok().map(|n| {
            buf.truncate(n);
            buf
        })
    } else {
        None
    };
    let children = inode.is_dir().then(|| {
        let mut names: Vec<(Vec<u8>, u8)> = inode
            .dir()
            .unwrap()
            .entries()
            .map(|e| e.unwrap())
            .filter(|e| e.name != b"." && e.name != b"..")
            .map(|e| (e.name.to_vec(), e.dtype()))
            .collect();
        names.sort();
        names
    });
    Entry {
        path,
        ino: inode.nid(),
        mode: inode.mode(),
        uid: inode.uid(),
        gid: inode.gid(),
        size: inode.size(),
        nlink: u64::from(inode.nlink()),
        mtime,
        mtime_nsec,
        rdev_major,
        rdev_minor,
        symlink: (inode.file_type() == FileType::Symlink)
            .then(|| inode.symlink_target().unwrap().to_vec()),
        xattrs,
        content,
        children,
    }
}
