//! `lazycfs service`: the mount service daemon.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lazycfs::service::server::{self, Limits};

use super::args::ServiceArgs;

pub fn service(args: ServiceArgs) -> Result<ExitCode, ExitCode> {
    let fail = |what: &str, e: std::io::Error| {
        eprintln!("lazycfs service: {what}: {e}");
        ExitCode::from(1)
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("lazycfs service: must run as root");
        return Err(ExitCode::from(1));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| fail("signals", e))?;
    }
    let listener = server::listener(&args.listen).map_err(|e| fail("listening", e))?;
    let mut limits = Limits::default();
    limits.max_image_bytes = args.max_image_size;
    limits.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    limits.max_in_flight = args.max_requests.max(1);
    limits.max_mounts_per_user = args.max_mounts_per_user;
    limits.cache_bytes = args.cache_size;
    log::info!("mount service listening");
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        log::warn!("cannot notify systemd of readiness: {e}");
    }
    server::serve(listener, limits, &stop).map_err(|e| fail("serving", e))?;
    log::info!("mount service stopped");
    Ok(ExitCode::SUCCESS)
}
