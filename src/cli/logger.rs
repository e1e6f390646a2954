//! Log lines on stderr (env_logger): `[2026-11-27T17:04:09Z WARN  lazycfs::server] message`.
//!
//! The level is `warn`, `info` with `-v`, `debug` with `-vv`; `RUST_LOG` (`debug`,
//! `lazycfs::server=trace,fuser=warn`, ...) overrides it.

use log::LevelFilter;

/// Installs the logger for `-v` given `verbose` times.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        _ => LevelFilter::Debug,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        // fuser warns when it finds the mount already gone after a clean unmount.
        .filter_module("fuser::mnt", LevelFilter::Error)
        .parse_env(env_logger::Env::new().filter("RUST_LOG"))
        .try_init();
}
