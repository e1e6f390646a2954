//! Links the `lazycfs` binary with its serving code packed together (see `layout/README.md`).
//!
//! Code is mapped in 64 KiB fault-around windows, so a server whose startup and request path
//! touch a few functions in every window keeps the whole binary resident. `layout/hot-functions.txt`
//! lists the functions that path runs, as recorded by `layout/record`; lld places them first.
//! The list names mangled symbols of one exact toolchain and release profile, so it is used only
//! for that toolchain's release builds of the binary, and everything else builds unchanged.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

const LIST: &str = "layout/hot-functions.txt";
/// The one target on which rustc links with lld by default (from Rust 1.90).
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo::rerun-if-changed={LIST}");
    println!("cargo::rerun-if-env-changed=LAZYCFS_LAYOUT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    match hot_function_order() {
        Ok(order) => {
            println!("cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
            // Symbols a code change removed are skipped, not errors.
            println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
        Err(why) if env::var_os("LAZYCFS_LAYOUT").is_some_and(|v| v == "require") => {
            panic!("LAZYCFS_LAYOUT=require, but the hot-function layout is not used: {why}")
        }
        Err(_) => {}
    }
}

/// Writes the symbol ordering file for this build, or says why the list does not apply.
fn hot_function_order() -> Result<String, String> {
    if env::var_os("LAZYCFS_LAYOUT").is_some_and(|v| v == "off") {
        return Err("LAZYCFS_LAYOUT=off".into());
    }
    let target = env::var("TARGET").unwrap_or_default();
    if target != TARGET {
        return Err(format!("target {target}, the list is for {TARGET}"));
    }
    if env::var("PROFILE").as_deref() != Ok("release") {
        return Err("not a release build".into());
    }
    // Another linker may not know `--symbol-ordering-file`.
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || rustflags.contains("linker")
        || rustflags.contains("fuse-ld")
    {
        return Err("a linker is configured".into());
    }
    let list = fs::read_to_string(LIST).map_err(|e| format!("{LIST}: {e}"))?;
    let recorded_with = list
        .lines()
        .find_map(|l| l.strip_prefix("# rustc "))
        .ok_or(format!("{LIST} names no toolchain"))?;
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .map_err(|e| format!("rustc -V: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.trim().strip_prefix("rustc ").unwrap_or_default();
    if version != recorded_with.trim() {
        let why = format!("rustc {version}, the list is for {recorded_with}");
        println!(
            "cargo::warning=hot-function layout not applied ({why}): the binary works, with a \
             larger resident set; `sudo layout/record` records it for this toolchain"
        );
        return Err(why);
    }
    let order =
        PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?).join("hot-functions.order");
    let names: String = list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .flat_map(|l| [l.trim(), "\n"])
        .collect();
    fs::write(&order, names).map_err(|e| format!("{}: {e}", order.display()))?;
    Ok(order.display().to_string())
}
