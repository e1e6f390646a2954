//! `Image::prefetcher`: readahead of the image, after the image has moved on.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cfs;
use lazycfs::erofs::Image;

/// Pages of `path` in the page cache, from util-linux `fincore`; `None` if it is not installed.
fn cached_pages(path: &Path) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--noheadings", "--output", "PAGES"])
        .arg(path)
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pages = stdout.trim().parse();
    Some(pages.unwrap_or_else(|_| panic!("fincore {}: {stdout:?} {out:?}", path.display())))
}

#[test]
fn prefetch_reads_the_whole_image_into_the_page_cache() {
    // Inline files for an image of ~22 MiB: more than the head submitted below plus one
    // readahead of the disk (asserted once the file is written).
    let mut dump = String::from("/ 0 40755 2 0 0 0 0.0 - - -\n");
    let content = "x".repeat(500);
    for i in 0..40_000 {
        writeln!(dump, "/f{i:05} 500 100644 1 0 0 0 0.0 - {content} -").unwrap();
    }
    let bytes = cfs::write_image(&dump, 1);
    // Not /tmp: a tmpfs file cannot be dropped from memory.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("image.cfs");
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let Some(before) = cached_pages(&path) else {
        common::skip(
            "prefetch",
            "fincore (Debian: util-linux-extra) is not installed",
        );
        return;
    };
    let pages = bytes.len().div_ceil(4096) as u64;
    let head: u64 = 12 << 20;
    let readahead = max_readahead(&path);
    assert!(
        bytes.len() as u64 > head + readahead,
        "an image of {} bytes cannot tell a head of {head} and a readahead of {readahead} \
         from the whole",
        bytes.len()
    );
    assert!(
        before < pages / 4,
        "{before} of {pages} pages cached after eviction"
    );
    // Opening reads the pages of the superblock and the root inode, and nothing around them:
    // the mapping is for random access (a read-around window would be 32 pages with the
    // default readahead, `max_readahead` on the disk).
    let image = Image::open(&path).unwrap();
    let opened = cached_pages(&path).unwrap();
    assert!(
        opened <= before + 2,
        "{opened} of {pages} pages cached after open, {before} before"
    );

    // A part, submitted at once.
    let mut prefetch = image.prefetcher();
    drop(image);
    prefetch.submit(head);
    let head_pages = head / 4096;
    let cached = wait_for_pages(&path, head_pages);
    assert!(
        cached < pages,
        "{cached} of {pages} pages cached after submitting the first {head_pages}"
    );
    // What servers run on a thread of their own: the rest, a few windows at a time. It
    // returns once the last window is submitted; the last reads complete after that.
    prefetch.run();
    assert_eq!(wait_for_pages(&path, pages), pages);
}

/// The most the kernel reads ahead on the disk holding `path` (its `read_ahead_kb`), in
/// bytes.
fn max_readahead(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let kib: u64 = std::fs::read_to_string(&knob)
        .unwrap_or_else(|e| panic!("{knob}: {e}"))
        .trim()
        .parse()
        .unwrap();
    kib << 10
}

/// Waits until at least `want` pages of `path` are cached; returns how many are. The
/// deadline bounds a stuck test; it is not a measurement.
fn wait_for_pages(path: &Path, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cached = cached_pages(path).unwrap();
        if cached >= want {
            return cached;
        }
        assert!(
            Instant::now() < deadline,
            "{cached} pages cached, {want} wanted after prefetch"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
