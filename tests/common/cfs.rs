//! Composefs images built with the `composefs` crate's writer, and its reader as a reference
//! for `lazycfs dump`.

use std::path::Path;

use composefs::dumpfile::{
    dumpfile_to_filesystem, dumpfile_to_validated_filesystem, write_dumpfile,
};
use composefs::dumpfile_parse::Entry;
use composefs::erofs::format::FormatVersion;
use composefs::erofs::reader::erofs_to_filesystem;
use composefs::erofs::writer::mkfs_erofs_versioned;
use composefs::fsverity::Sha256HashValue;

/// The composefs format versions the writer supports.
pub const VERSIONS: [u32; 3] = [0, 1, 2];

fn format_version(version: u32) -> FormatVersion {
    match version {
        0 => FormatVersion::V0,
        1 => FormatVersion::V1,
        2 => FormatVersion::V2,
        v => panic!("no composefs format version {v}"),
    }
}

/// Writes `dump` as a composefs EROFS image of the given format version.
pub fn write_image(dump: &str, version: u32) -> Vec<u8> {
    let fs =
        dumpfile_to_validated_filesystem::<Sha256HashValue>(dump).expect("writer accepts dumpfile");
    mkfs_erofs_versioned(&fs, format_version(version)).into_vec()
}

/// What composefs' own reader prints for an image.
pub fn reference_dump(image: &[u8]) -> String {
    let fs = erofs_to_filesystem::<Sha256HashValue>(image).expect("composefs reads its own image");
    let mut out = Vec::new();
    write_dumpfile(&mut out, &fs).unwrap();
    String::from_utf8(out).unwrap()
}

/// A dumpfile as the composefs writer canonicalizes it (sorted, recomputed nlinks, …).
pub fn canonical_dump(dump: &str) -> String {
    let fs = dumpfile_to_filesystem::<Sha256HashValue>(dump).expect("valid dumpfile");
    let mut out = Vec::new();
    write_dumpfile(&mut out, &fs).unwrap();
    String::from_utf8(out).unwrap()
}

/// `lazycfs dump` of an in-memory image.
pub fn lazycfs_dump(image: &[u8]) -> String {
    let image = lazycfs::erofs::Image::from_bytes(image.to_vec()).expect("lazycfs opens image");
    let mut out = Vec::new();
    lazycfs::dump::dump(&image, &mut out).expect("lazycfs dumps image");
    String::from_utf8(out).unwrap()
}

/// Every dumpfile in the corpus.
pub const CORPUS: [&str; 13] = [
    "bigfile-xattr.dump",
    "bigfile.dump",
    "config-with-hard-link.dump.gz",
    "config.dump.gz",
    "cs9-x86_64-developer.dump.gz",
    "cs9-x86_64-minimal.dump.gz",
    "honggfuzz-bigfile-with-acl.dump",
    "honggfuzz-chardev-nonzero-size.dump",
    "honggfuzz-long-symlink.dump",
    "honggfuzz-longlink-unterminated.dump",
    "longlink.dump",
    "no-newline.dump",
    "special.dump",
];

/// The corpus dumpfiles the composefs crate's writer refuses whole: `no-newline.dump`'s root
/// entry carries a device number (rdev 10). Every other file of [`CORPUS`] is written, less
/// the entries listed in [`CorpusDump::dropped`].
pub const CORPUS_REFUSED: [&str; 1] = ["no-newline.dump"];

/// How many corpus files each fidelity test must compare.
pub const CORPUS_WRITABLE: usize = CORPUS.len() - CORPUS_REFUSED.len();

/// Every corpus dumpfile the writer accepts, in [`CORPUS`] order, with the dropped entries
/// reported on stderr; `None` (a skip, a failure under CI) without a corpus. Panics if the
/// files the writer refuses are not exactly [`CORPUS_REFUSED`]: no test passes by skipping
/// more of the corpus than that.
pub fn writable_corpus(test: &str) -> Option<Vec<(&'static str, CorpusDump)>> {
    let dir = super::kernel::corpus_dir(test)?;
    let mut writable = Vec::new();
    let mut refused = Vec::new();
    for name in CORPUS {
        match corpus_dump(&dir, name) {
            Ok(dump) => {
                for line in &dump.dropped {
                    eprintln!("{name}: dropped an entry the writer refuses: {line}");
                }
                writable.push((name, dump));
            }
            Err(why) => {
                eprintln!("{name}: not writable by the composefs crate: {why}");
                refused.push(name);
            }
        }
    }
    assert_eq!(
        refused, CORPUS_REFUSED,
        "corpus files the writer refuses whole"
    );
    Some(writable)
}

/// A corpus dumpfile prepared for the Rust writer.
pub struct CorpusDump {
    /// The dumpfile text the writer accepts.
    pub text: String,
    /// Lines dropped because the writer refuses them, with the reason.
    pub dropped: Vec<String>,
    /// The format version the corpus asks for (`.version` file), default 1.
    pub version: u32,
}

/// Reads a corpus dumpfile, rewriting cs9's ostree payloads (`xx/<62 hex>.file`) into
/// composefs object names with digests, and dropping the entries the Rust writer refuses
/// (inline content over 512 bytes, symlinks over 1024 bytes, malformed lines). `Err` with the
/// reason when the writer refuses the file as a whole (e.g. its root entry).
pub fn corpus_dump(dir: &Path, name: &str) -> Result<CorpusDump, String> {
    let path = dir.join(name);
    let raw = if name.ends_with(".gz") {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .expect("gzip runs");
        assert!(out.status.success(), "gzip -dc {}", path.display());
        out.stdout
    } else {
        std::fs::read(&path).unwrap()
    };
    let raw = String::from_utf8(raw).expect("dumpfiles are ASCII");
    let version = std::fs::read_to_string(dir.join(format!("{name}.version")))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    let mut text = String::with_capacity(raw.len());
    let mut dropped = Vec::new();
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        let line = rewrite_ostree_payload(line);
        match Entry::parse(&line) {
            Ok(_) => {
                text.push_str(&line);
                text.push('\n');
            }
            Err(e) => {
                if text.is_empty() {
                    return Err(format!("writer refuses the root entry: {e}"));
                }
                dropped.push(format!("{}: {e}", line.split(' ').next().unwrap_or("")));
            }
        }
    }
    dumpfile_to_validated_filesystem::<Sha256HashValue>(&text)
        .map_err(|e| format!("writer refuses file: {e:#}"))?;
    Ok(CorpusDump {
        text,
        dropped,
        version,
    })
}

fn rewrite_ostree_payload(line: &str) -> String {
    let fields: Vec<&str> = line.splitn(12, ' ').collect();
    if fields.len() >= 11 && !fields[2].starts_with('@') && fields[8].ends_with(".file") {
        let object = fields[8].trim_end_matches(".file");
        let digest = object.replace('/', "");
        let mut f = fields.clone();
        f[8] = object;
        f[10] = &digest;
        f.join(" ")
    } else {
        line.to_string()
    }
}
