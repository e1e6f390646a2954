//! `lazycfs dump` and `lazycfs check`.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

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
