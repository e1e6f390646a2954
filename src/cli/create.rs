//! `lazycfs create`: the image and objects of a directory tree, with a progress bar on a
//! terminal, or the image of a dumpfile.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use lazycfs::create::{CreateOptions, Format, Progress, hex};

use super::args::{CreateArgs, FormatArg};

/// Writes the image; prints its digest with `--print-digest`.
pub fn create(args: CreateArgs) -> Result<ExitCode, ExitCode> {
    // With `--from-dump` the one positional argument is the image.
    let (source, image) = match (&args.from_dump, &args.image) {
        (Some(dump), None) => (dump.clone(), args.source.clone()),
        (None, Some(image)) => (args.source.clone(), image.clone()),
        (Some(_), Some(_)) => {
            eprintln!(
                "lazycfs create: with --from-dump, give only IMAGE (the dumpfile is the source)"
            );
            return Err(ExitCode::from(2));
        }
        (None, None) => {
            eprintln!("lazycfs create: IMAGE is missing (lazycfs create SOURCE IMAGE ...)");
            return Err(ExitCode::from(2));
        }
    };
    let stop = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register_usize(signal, stop.clone(), signal as usize) {
            eprintln!("lazycfs: cannot handle signal {signal}: {e}");
            return Err(ExitCode::FAILURE);
        }
    }
    let options = CreateOptions {
        format: match args.format {
            FormatArg::V0 => Format::V0,
            FormatArg::V1 => Format::V1,
            FormatArg::V2 => Format::V2,
        },
        threads: args.threads,
    };
    let bar = Bar::new(std::io::stderr().is_terminal());
    let objects = if args.digest_only {
        None
    } else {
        args.objects.as_deref()
    };
    let created = if args.from_dump.is_some() {
        lazycfs::create::create_from_dump(&source, &image, &options, &stop)
    } else {
        lazycfs::create::create(&source, &image, objects, &options, &stop, &bar)
    };
    match created {
        Ok(created) => {
            bar.bar.finish_and_clear();
            if args.print_digest {
                println!("{}", hex(&created.digest));
            }
            log::info!(
                "{} files ({} bytes) hashed; {} objects written, {} already present",
                created.files,
                created.bytes,
                created.objects_written,
                created.objects_present
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            bar.bar.abandon();
            eprintln!("lazycfs create: {e}");
            Err(ExitCode::from(e.exit_status()))
        }
    }
}

/// Files, bytes and rate on stderr; hidden when stderr is not a terminal.
struct Bar {
    bar: ProgressBar,
    files_done: Arc<AtomicU64>,
    files_found: Arc<AtomicU64>,
}

impl Bar {
    fn new(visible: bool) -> Bar {
        let files_done = Arc::new(AtomicU64::new(0));
        let files_found = Arc::new(AtomicU64::new(0));
        if !visible {
            return Bar {
                bar: ProgressBar::hidden(),
                files_done,
                files_found,
            };
        }
        let (done, found) = (files_done.clone(), files_found.clone());
        let files = move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
            let done = done.load(Ordering::Relaxed);
            let _ = write!(out, "{done}/{} files", found.load(Ordering::Relaxed));
        };
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {files}, {binary_bytes}/{binary_total_bytes} \
             ({binary_bytes_per_sec})",
        )
        .expect("valid template")
        .with_key("files", files);
        let bar = ProgressBar::new(0).with_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        Bar {
            bar,
            files_done,
            files_found,
        }
    }
}

impl Progress for Bar {
    fn found(&self, size: u64) {
        self.files_found.fetch_add(1, Ordering::Relaxed);
        self.bar.inc_length(size);
    }

    fn hashed(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }
}
