//! The commands behind `src/main.rs`. Each returns the process exit status; `Err` carries
//! the status of a failure whose message is already printed.

pub mod args;
pub mod docs;
pub mod inspect;
pub mod logger;
pub mod mount;
pub mod run;

use std::path::Path;
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
