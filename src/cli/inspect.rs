//! `lazycfs dump`, `check`, `objects` and `missing`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lazycfs::objects::ListError;

use super::{USAGE_ERROR, open_image};

/// Prints the image as a composefs dumpfile.
pub fn dump(image: &Path) -> Result<ExitCode, ExitCode> {
    let image = open_image(image, USAGE_ERROR)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    match lazycfs::dump::dump(&image, &mut out).and_then(|()| out.flush().map_err(Into::into)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("lazycfs dump: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// Walks the whole image; prints a summary, or the first problem (exit 1).
pub fn check(image: &Path) -> Result<ExitCode, ExitCode> {
    let image = open_image(image, USAGE_ERROR)?;
    match lazycfs::check::check(&image) {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("lazycfs check: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// Prints why the images' objects could not be listed; exit status `corrupt` if one is
/// inconsistent, [`USAGE_ERROR`] if one could not be opened.
fn list_failed(error: ListError, corrupt: u8) -> ExitCode {
    eprintln!("lazycfs: {error}");
    ExitCode::from(match error {
        ListError::Open(_) => USAGE_ERROR,
        ListError::Corrupt { .. } => corrupt,
    })
}

fn print_objects<'a>(objects: impl IntoIterator<Item = &'a [u8]>) -> Result<(), ExitCode> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written: io::Result<()> = objects
        .into_iter()
        .try_for_each(|object| {
            out.write_all(object)?;
            out.write_all(b"\n")
        })
        .and_then(|()| out.flush());
    match written {
        // A reader that has seen enough (`| head`) is not an error.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("lazycfs: stdout: {e}");
            Err(ExitCode::from(1))
        }
        _ => Ok(()),
    }
}

/// Prints every object the images reference.
pub fn objects(images: &[PathBuf]) -> Result<ExitCode, ExitCode> {
    let objects = lazycfs::objects::referenced_by(images).map_err(|e| list_failed(e, 1))?;
    print_objects(objects.iter().map(Vec::as_slice))?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the objects the images reference that `basedir` lacks; exit 1 if there are any.
pub fn missing(images: &[PathBuf], basedir: &Path) -> Result<ExitCode, ExitCode> {
    let store = lazycfs::objects::ObjectStore::open(basedir).map_err(|e| {
        eprintln!("lazycfs: basedir {}: {e}", basedir.display());
        ExitCode::from(USAGE_ERROR)
    })?;
    let missing = lazycfs::objects::missing_from(&store, images)
        .map_err(|e| list_failed(e, USAGE_ERROR))?
        .objects;
    print_objects(missing.iter().map(Vec::as_slice))?;
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
