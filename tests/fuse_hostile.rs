//! Untrusted redirects never escape the basedir: `..`, absolute paths, symlinks planted in
//! the basedir and missing objects each fail that open, with the error the rootful kernel
//! composefs mount gives, while the server keeps serving everything else.

mod common;

use std::io::ErrorKind;
use std::path::Path;

use common::{fixtures, kernel};
use lazycfs::erofs::Image;
use lazycfs::mount::ServeOptions;

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// A metacopy file redirected to `redirect`.
fn redirected(dir: &Path, name: &str, redirect: &str, size: u64) {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    set_xattr(&path, "trusted.overlay.metacopy", b"");
    set_xattr(&path, "trusted.overlay.redirect", redirect.as_bytes());
}

#[test]
fn hostile_redirects_fail_as_in_the_kernel_mount_only_for_that_file() {
    let test = "hostile_redirects_fail_as_in_the_kernel_mount_only_for_that_file";
    if !kernel::require_composefs(test) || !fixtures::require_mkfs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let basedir = dir.path().join("objects");
    std::fs::create_dir_all(basedir.join("ab")).unwrap();
    std::fs::create_dir(&src).unwrap();
    std::fs::write(basedir.join("ab/good"), b"good object").unwrap();
    std::fs::write(dir.path().join("secret"), b"outside the basedir").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), basedir.join("ab/planted")).unwrap();
    redirected(&src, "good", "/ab/good", 11);
    redirected(&src, "dotdot", "/../secret", 19);
    redirected(&src, "dotdot-deep", "/ab/../../secret", 19);
    redirected(
        &src,
        "absolute",
        &dir.path().join("secret").display().to_string(),
        19,
    );
    redirected(&src, "planted-symlink", "/ab/planted", 19);
    redirected(&src, "missing", "/ab/missing", 5);
    std::fs::write(src.join("plain"), b"stored in the image").unwrap();
    let image = dir.path().join("hostile.erofs");
    fixtures::mkfs_erofs(&src, &image, &[]).unwrap();

    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let hostile = [
        "dotdot",
        "dotdot-deep",
        "absolute",
        "planted-symlink",
        "missing",
    ];
    let reference = kernel::KernelMount::composefs(&image, &basedir).unwrap();
    let errors = |root: &Path| {
        hostile.map(|name| std::fs::read(root.join(name)).map_err(|e| e.raw_os_error()))
    };
    let theirs = errors(reference.path());
    drop(reference);
    let options = ServeOptions::new().basedir(&basedir).threads(2);
    let mounted = lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &options).unwrap();
    let ours = errors(&mnt);
    // Escapes and planted symlinks read nothing, and fail as the kernel mount fails them
    // (EXDEV for `..`, ENOENT otherwise).
    assert_eq!(ours, theirs, "lazycfs vs kernel composefs: {hostile:?}");
    for (name, result) in hostile.iter().zip(&ours) {
        assert!(result.is_err(), "{name} was read");
        // Metadata is still served.
        assert!(std::fs::symlink_metadata(mnt.join(name)).is_ok(), "{name}");
    }
    assert_eq!(std::fs::read(mnt.join("good")).unwrap(), b"good object");
    assert_eq!(
        std::fs::read(mnt.join("plain")).unwrap(),
        b"stored in the image"
    );
    assert_eq!(
        std::fs::read(mnt.join("nonexistent")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    mounted.unmount().unwrap();
}
