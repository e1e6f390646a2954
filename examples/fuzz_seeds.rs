//! Writes the fuzz targets' seed corpora (see `fuzz/README.md`; `fuzz/seeds.sh` runs this):
//!
//! ```sh
//! cargo run --example fuzz_seeds -- fuzz/seeds   # fuzz/seeds/{decode,differential,requests}/
//! ```
//! Needs `mkfs.erofs` (erofs-utils).

use std::path::PathBuf;

#[path = "../fuzz/seeds.rs"]
mod seeds;

#[path = "../fuzz/logic/requests.rs"]
mod requests;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds OUTPUT_DIR");
        std::process::exit(2);
    };
    let work = tempfile::tempdir()?;
    let mut all = seeds::composefs_seeds();
    all.extend(seeds::handmade_seeds());
    all.extend(seeds::mkfs_seeds(work.path())?);
    for target in ["decode", "differential", "requests"] {
        std::fs::create_dir_all(out.join(target))?;
    }
    let mut bytes = 0;
    for seed in &all {
        std::fs::write(out.join("decode").join(&seed.name), &seed.image)?;
        std::fs::write(out.join("differential").join(&seed.name), &seed.image)?;
        for (i, script) in seeds::scripts().iter().enumerate() {
            let input = requests::input(script, &seed.image);
            bytes += input.len();
            std::fs::write(
                out.join("requests").join(format!("{}-{i}", seed.name)),
                input,
            )?;
        }
        bytes += 2 * seed.image.len();
    }
    println!(
        "{} seed images ({} KiB in all) in {}",
        all.len(),
        bytes / 1024,
        out.display()
    );
    Ok(())
}
