//! Quick start: builds a small composefs image and its objects directory, mounts it with
//! lazycfs and shows what the mount serves.
//!
//! ```sh
//! cargo run --example demo -- /tmp/lazycfs-demo          # mounts, lists, waits for Ctrl-C
//! cargo run --example demo -- /tmp/lazycfs-demo --exit   # mounts, lists, unmounts
//! ```
//! Needs `/dev/fuse` (root, or `fusermount3` as an ordinary user).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use composefs::dumpfile::dumpfile_to_validated_filesystem;
use composefs::erofs::format::FormatVersion;
use composefs::erofs::writer::mkfs_erofs_versioned;
use composefs::fsverity::Sha256HashValue;
use lazycfs::erofs::Image;
use lazycfs::mount::ServeOptions;

/// The demo tree: one redirected file whose content lives in the objects directory.
const OBJECT: &str = "6c/d4a3b1c2e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";
const CONTENT: &[u8] = b"hello from the objects directory\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/lazycfs-demo".into()));
    let exit_at_once = args.any(|a| a == "--exit");
    let (image_path, objects, mountpoint) =
        (dir.join("demo.cfs"), dir.join("objects"), dir.join("mnt"));
    std::fs::create_dir_all(&mountpoint)?;
    write_demo(&image_path, &objects)?;
    println!(
        "image:   {}\nobjects: {}",
        image_path.display(),
        objects.display()
    );

    let image = Image::open(&image_path)?;
    let options = ServeOptions::new().basedir(&objects);
    let mounted = lazycfs::mount::mount(image, &mountpoint, &options)?;
    println!("mounted: {}\n", mountpoint.display());
    for entry in std::fs::read_dir(&mountpoint)? {
        let entry = entry?;
        println!(
            "  {:<12} {:>6} bytes",
            entry.file_name().to_string_lossy(),
            entry.metadata()?.len()
        );
    }
    let hello = std::fs::read_to_string(mountpoint.join("hello.txt"))?;
    println!("\nhello.txt (read from its object): {hello}");
    if exit_at_once {
        return Ok(mounted.unmount()?);
    }
    println!("Ctrl-C unmounts.");
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    while !stop.load(Ordering::Relaxed) && !mounted.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(mounted.unmount()?)
}

fn write_demo(image: &Path, objects: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let digest = OBJECT.replace('/', "");
    let dump = format!(
        "/ 0 40755 2 0 0 0 1700000000.0 - - -\n\
         /hello.txt {len} 100644 1 0 0 0 1700000000.0 {OBJECT} - {digest}\n\
         /inline.txt 6 100644 1 0 0 0 1700000000.0 - inline - user.demo=1\n\
         /link 9 120777 1 0 0 0 1700000000.0 hello.txt - -\n",
        len = CONTENT.len()
    );
    let fs = dumpfile_to_validated_filesystem::<Sha256HashValue>(&dump)?;
    std::fs::write(image, mkfs_erofs_versioned(&fs, FormatVersion::V1))?;
    let object = objects.join(OBJECT);
    std::fs::create_dir_all(object.parent().expect("object has a parent"))?;
    std::fs::write(object, CONTENT)?;
    Ok(())
}
