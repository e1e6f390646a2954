//! Which transport carries a mount's requests: FUSE over io_uring or `/dev/fuse`, and the
//! server's start-up around the fuser session (INIT, device, queues, busy polling).

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::server::uring::{Queues, Rings, StartError};
use crate::server::{DevFuse, Server};

/// How FUSE requests travel between the kernel and the server (`--transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// FUSE over io_uring when the kernel offers it, else /dev/fuse
    #[default]
    Auto,
    /// FUSE over io_uring: one queue per CPU, each request answered on the CPU that made it
    /// (Linux 6.14+, `fuse.enable_uring=1`)
    Uring,
    /// Requests read from and answered through /dev/fuse
    Dev,
}

impl Transport {
    /// The name `--transport` takes.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Uring => "uring",
            Transport::Dev => "dev",
        }
    }
}

/// The transport's part of a mount in progress.
pub(super) struct Plan {
    requested: Transport,
    /// The rings, when io_uring is wanted and usable.
    rings: Option<Rings>,
}

impl Plan {
    /// Prepares `requested`; an explicit `uring` that cannot work is an error, before
    /// anything is mounted.
    pub(super) fn new(requested: Transport) -> io::Result<Plan> {
        let rings = match requested {
            Transport::Dev => {
                log::info!("transport dev: requested");
                None
            }
            Transport::Auto | Transport::Uring => match Rings::create() {
                Ok(rings) => Some(rings),
                Err(why) if requested == Transport::Uring => return Err(unavailable(&why)),
                Err(why) => {
                    log::info!("transport dev: FUSE over io_uring unavailable: {why}");
                    None
                }
            },
        };
        Ok(Plan { requested, rings })
    }

    /// Whether the server should ask for FUSE over io_uring at INIT.
    pub(super) fn wants_uring(&self) -> bool {
        self.rings.is_some()
    }

    /// Creates the session serving `fs` (`create` mounts, or wraps a mounted device, and
    /// negotiates INIT), starts the io_uring queues if the kernel granted them, and runs the
    /// session in the background. On error the session is dropped (and with it a mount it
    /// made).
    pub(super) fn serve(
        self,
        fs: DevFuse,
        create: impl FnOnce(DevFuse) -> io::Result<fuser::Session<DevFuse>>,
    ) -> io::Result<(fuser::BackgroundSession, Transport, Option<Queues>)> {
        let server = fs.server();
        let busy_poll = fs.busy_poll();
        let session = create(fs)?;
        let device = Arc::new(session.as_fd().try_clone_to_owned()?);
        server.set_device(device.clone());
        let (transport, queues) = self.start(&server, &device)?;
        if queues.is_none() {
            busy_poll.attach(session.as_fd())?;
        }
        Ok((session.spawn()?, transport, queues))
    }

    fn start(
        self,
        server: &Arc<Server>,
        device: &Arc<std::os::fd::OwnedFd>,
    ) -> io::Result<(Transport, Option<Queues>)> {
        let Some(rings) = self.rings else {
            return Ok((Transport::Dev, None));
        };
        let uring_required = self.requested == Transport::Uring;
        if !server.uring_granted() {
            let why = "the kernel did not offer it at INIT";
            if uring_required {
                return Err(unavailable(why));
            }
            log::info!("transport dev: FUSE over io_uring unavailable: {why}");
            return Ok((Transport::Dev, None));
        }
        let queues = rings.len();
        match Queues::start(rings, server, device) {
            Ok(queues_started) => {
                log::info!(
                    "transport uring: {} ({queues} queues, one per CPU)",
                    match self.requested {
                        Transport::Uring => "requested",
                        _ => "the kernel offers FUSE over io_uring",
                    }
                );
                Ok((Transport::Uring, Some(queues_started)))
            }
            Err(StartError::Refused(e)) if !uring_required => {
                log::info!("transport dev: the kernel refused the io_uring queues: {e}");
                Ok((Transport::Dev, None))
            }
            Err(StartError::Refused(e) | StartError::Failed(e)) => Err(unavailable(&format!(
                "the io_uring queues did not start: {e}"
            ))),
        }
    }
}

fn unavailable(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("FUSE over io_uring unavailable: {why}"),
    )
}
