//! Decoder micro-benchmarks: image open (must be flat in image size), lookup hit/miss and
//! readdir in a 100k-entry directory, getattr, getxattr hit/miss, listxattr.
//!
//! Images are built with the composefs crate's EROFS writer from generated dumpfiles; set
//! `LAZYCFS_CORPUS` (default `../shared/corpus`) to also open the 64k-entry cs9 developer image.

use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;

use composefs::erofs::format::FormatVersion;
use composefs::fsverity::Sha256HashValue;
use criterion::{Criterion, criterion_group, criterion_main};
use lazycfs::erofs::Image;

const BIG_DIR: usize = 100_000;

/// A dumpfile with `dirs` directories of `per_dir` files each, plus `/big` with `big` files;
/// every file carries two xattrs.
fn synthetic_dump(dirs: usize, per_dir: usize, big: usize) -> String {
    let mut s = String::from("/ 0 40755 2 0 0 0 1700000000.0 - - - user.root=1\n");
    if big > 0 {
        s.push_str("/big 0 40755 2 0 0 0 1700000000.0 - - -\n");
        for i in 0..big {
            s.push_str(&format!(
                "/big/f{i:07} 3 100644 1 0 0 0 1700000000.0 - abc - user.a=1 security.selinux=x\n"
            ));
        }
    }
    for d in 0..dirs {
        s.push_str(&format!("/d{d:05} 0 40755 2 0 0 0 1700000000.0 - - -\n"));
        for f in 0..per_dir {
            s.push_str(&format!(
                "/d{d:05}/f{f:05} 3 100644 1 0 0 0 1700000000.0 - abc - user.a=1 security.selinux=x\n"
            ));
        }
    }
    s
}

fn write_image(name: &str, dump: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-images");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if !path.exists() {
        let fs = composefs::dumpfile::dumpfile_to_validated_filesystem::<Sha256HashValue>(dump)
            .expect("valid dumpfile");
        let image = composefs::erofs::writer::mkfs_erofs_versioned(&fs, FormatVersion::V1);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &image).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

fn corpus_image(name: &str) -> Option<PathBuf> {
    let corpus = std::env::var_os("LAZYCFS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let mut text = String::new();
    flate2_free_gunzip(&corpus.join(name), &mut text)?;
    // cs9 payloads are ostree object names: use them as composefs object paths and digests.
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(12, ' ').collect();
        if fields.len() >= 11 && fields[8].ends_with(".file") && !fields[2].starts_with('@') {
            let object = fields[8].trim_end_matches(".file");
            let digest = object.replace('/', "");
            let mut f = fields.clone();
            f[8] = object;
            f[10] = &digest;
            out.push_str(&f.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Some(write_image(&format!("{name}.erofs"), &out))
}

/// Decompresses with the system `gzip` so the bench needs no compression crate.
fn flate2_free_gunzip(path: &std::path::Path, out: &mut String) -> Option<()> {
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdout.take()?.read_to_string(out).ok()?;
    child.wait().ok()?.success().then_some(())
}

fn bench_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    let small = write_image("small.erofs", &synthetic_dump(2, 5, 0));
    let big = write_image("1m.erofs", &synthetic_dump(1000, 1000, 0));
    let mut images = vec![("small", small)];
    if let Some(cs9) = corpus_image("cs9-x86_64-developer.dump.gz") {
        images.push(("cs9-developer-64k", cs9));
    }
    images.push(("synthetic-1m", big));
    for (name, path) in images {
        let len = std::fs::metadata(&path).unwrap().len();
        group.bench_function(format!("{name} ({} KiB)", len / 1024), |b| {
            b.iter(|| black_box(Image::open(&path).unwrap()))
        });
    }
    group.finish();
}

fn bench_ops(c: &mut Criterion) {
    let path = write_image("bigdir-100k.erofs", &synthetic_dump(0, 0, BIG_DIR));
    let image = Image::open(&path).unwrap();
    let root = image.root().unwrap().dir().unwrap();
    let big = image
        .inode(root.lookup(b"big").unwrap().unwrap().nid)
        .unwrap();
    let dir = big.dir().unwrap();
    let hit = format!("f{:07}", BIG_DIR * 2 / 3);
    let file_nid = dir.lookup(hit.as_bytes()).unwrap().unwrap().nid;

    let mut group = c.benchmark_group("ops");
    group.bench_function("lookup hit (100k dir)", |b| {
        b.iter(|| black_box(dir.lookup(black_box(hit.as_bytes())).unwrap()))
    });
    group.bench_function("lookup miss (100k dir)", |b| {
        b.iter(|| black_box(dir.lookup(black_box(b"f0066666x")).unwrap()))
    });
    group.bench_function("getattr", |b| {
        b.iter(|| {
            let inode = image.inode(black_box(file_nid)).unwrap();
            black_box((inode.mode(), inode.size(), inode.mtime(), inode.nlink()))
        })
    });
    group.bench_function("getxattr hit", |b| {
        b.iter(|| {
            let inode = image.inode(black_box(file_nid)).unwrap();
            black_box(inode.xattrs().unwrap().get(b"security.selinux").unwrap())
        })
    });
    group.bench_function("getxattr miss", |b| {
        b.iter(|| {
            let inode = image.inode(black_box(file_nid)).unwrap();
            black_box(inode.xattrs().unwrap().get(b"user.missing").unwrap())
        })
    });
    group.bench_function("listxattr", |b| {
        b.iter(|| {
            let inode = image.inode(black_box(file_nid)).unwrap();
            let mut n = 0;
            for x in inode.xattrs().unwrap().iter() {
                n += x.unwrap().name.len();
            }
            black_box(n)
        })
    });
    group.sample_size(20);
    group.bench_function("readdir (100k dir)", |b| {
        b.iter(|| {
            let mut n = 0;
            for e in dir.entries() {
                n += e.unwrap().name.len();
            }
            black_box(n)
        })
    });
    group.finish();

    // Lookup cost against directory size: logarithmic.
    let mut group = c.benchmark_group("lookup-scaling");
    for n in [100usize, 1_000, 10_000, 100_000] {
        let path = write_image(&format!("dir-{n}.erofs"), &synthetic_dump(0, 0, n));
        let image = Image::open(&path).unwrap();
        let root = image.root().unwrap().dir().unwrap();
        let dir = image
            .inode(root.lookup(b"big").unwrap().unwrap().nid)
            .unwrap()
            .dir()
            .unwrap();
        let name = format!("f{:07}", n / 3);
        group.bench_function(format!("{n} entries"), |b| {
            b.iter(|| black_box(dir.lookup(black_box(name.as_bytes())).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_open, bench_ops);
criterion_main!(benches);
