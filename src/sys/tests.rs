use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use super::Mapping;
use super::sigbus::repaired_faults;

const PAGE: usize = 4096;

/// A file of three pages of `fill` (closed: a writer would refuse the lease), mapped.
fn mapped_file(fill: u8) -> (tempfile::TempPath, Mapping) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&[fill; 3 * PAGE]).unwrap();
    let path = file.into_temp_path();
    let mapping = Mapping::map(&File::open(&path).unwrap()).unwrap();
    (path, mapping)
}

/// Reads through the mapping as the decoder does (a volatile load: the compiler must not
/// assume the byte unchanged).
fn byte_at(mapping: &Mapping, offset: usize) -> u8 {
    // SAFETY: `offset` is within the mapping; the read goes through a shared reference.
    unsafe { std::ptr::read_volatile(&mapping[offset]) }
}

#[test]
fn a_read_past_the_shrunk_end_reads_zeros_and_marks_the_image_changed() {
    let (file, mapping) = mapped_file(0xAA);
    assert_eq!(byte_at(&mapping, 2 * PAGE), 0xAA);
    assert!(!mapping.changed());
    let before = repaired_faults();
    let writer = OpenOptions::new().write(true).open(&file).unwrap();
    writer.set_len(PAGE as u64).unwrap();
    // The truncation dropped the cached pages past the end: this access faults.
    assert_eq!(byte_at(&mapping, 2 * PAGE + 17), 0);
    assert!(repaired_faults() > before, "the fault was repaired");
    assert!(mapping.changed());
    // The page before the new end is still the file's; the repaired page stays zeros.
    assert_eq!(byte_at(&mapping, 0), 0xAA);
    writer.set_len(3 * PAGE as u64).unwrap();
    assert_eq!(byte_at(&mapping, 2 * PAGE + 17), 0);
}

#[test]
fn a_writer_marks_the_image_changed_before_writing() {
    let (file, mapping) = mapped_file(0x55);
    assert_eq!(byte_at(&mapping, PAGE), 0x55);
    // The test runs as the file's owner, on a filesystem with leases (ext4, tmpfs, xfs...).
    let writer = OpenOptions::new().write(true).open(&file).unwrap();
    assert!(mapping.changed(), "opening for writing broke the lease");
    writer.write_all_at(&[1; 16], PAGE as u64).unwrap();
    // No fault: the page is rewritten in place and the mapping sees the new bytes, which
    // is why the change had to be noticed before.
    assert_eq!(byte_at(&mapping, PAGE), 1);
}

#[test]
fn images_in_memory_never_change() {
    let mapping = Mapping::Owned(vec![0; 16].into());
    assert!(!mapping.changed());
}

/// The child of [`a_fault_outside_images_still_kills`]: faults in a mapping of its own.
fn fault_outside_any_image() {
    let (_image, mapping) = mapped_file(0x11);
    assert_eq!(byte_at(&mapping, 0), 0x11, "the handler is installed");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&[0x22; 2 * PAGE]).unwrap();
    // SAFETY: the point is the fault: the file shrinks under this mapping.
    let other = unsafe { memmap2::Mmap::map(file.as_file()).unwrap() };
    file.as_file().set_len(0).unwrap();
    // SAFETY: in bounds of the mapping (whose file no longer is).
    let byte = unsafe { std::ptr::read_volatile(&other[PAGE]) };
    panic!("read {byte} past the end of a file without dying");
}

#[test]
fn a_fault_outside_images_still_kills() {
    const CHILD: &str = "LAZYCFS_TEST_SIGBUS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return fault_outside_any_image();
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sys::tests::a_fault_outside_images_still_kills"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

#[test]
fn a_forked_child_reports_back_or_is_stopped_at_its_deadline() {
    use super::namespaces::in_forked_child;
    use std::time::Duration;
    let long = Duration::from_secs(30);
    assert_eq!(in_forked_child(long, |_| {}).unwrap(), b"");
    assert_eq!(
        in_forked_child(long, |report| report.push(b"step 3")).unwrap(),
        b"step 3"
    );
    let stuck = in_forked_child(Duration::from_millis(200), |_| {
        std::thread::sleep(Duration::from_secs(60))
    });
    assert_eq!(stuck.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
}
