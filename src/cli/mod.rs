//! The commands behind `src/main.rs`. Each returns the process exit status; `Err` carries
//! the status of a failure whose message is already printed.

pub mod args;
pub mod create;
pub mod docs;
pub mod helper;
pub mod inspect;
pub mod logger;
pub mod mount;
pub mod run;
pub mod service;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lazycfs::erofs::Image;

/// Exit status of errors found before anything is mounted (no such image, not EROFS,
/// unsupported feature, basedir missing, ...).
pub const USAGE_ERROR: u8 = 2;

/// Opens an image, turning failure into a one-line error.
pub fn open_image(path: &Path, failure: u8) -> Result<Image, ExitCode> {
    Image::open(path).map_err(|e| {
        eprintln!("lazycfs: {e}");
        ExitCode::from(failure)
    })
}

/// Checks that the basedir, if any, is a directory.
pub fn check_basedir(basedir: Option<&Path>, failure: u8) -> Result<(), ExitCode> {
    match basedir {
        Some(dir) if !dir.is_dir() => {
            eprintln!("lazycfs: basedir {}: not a directory", dir.display());
            Err(ExitCode::from(failure))
        }
        _ => Ok(()),
    }
}

/// Counts, beside the mount, the objects `image` references that `basedir` lacks, and prints
/// a one-line warning when there are any. Failures are left to the mount to report.
pub fn warn_missing_objects(image: &Path, basedir: &Path) -> std::thread::JoinHandle<()> {
    let (image, basedir): (PathBuf, PathBuf) = (image.into(), basedir.into());
    std::thread::spawn(move || {
        let Ok(store) = lazycfs::objects::ObjectStore::open(&basedir) else {
            return;
        };
        let Ok(missing) = lazycfs::objects::missing_from(&store, [&image]) else {
            return;
        };
        if !missing.objects.is_empty() {
            eprintln!(
                "lazycfs: warning: {} of the {} objects {} references are missing from {} \
                 (`lazycfs missing` lists them)",
                missing.objects.len(),
                missing.referenced,
                image.display(),
                basedir.display()
            );
        }
    })
}
