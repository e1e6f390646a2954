//! FUSE passthrough backing ids, shared by both transports: registered on a duplicate of the
//! FUSE device (`FUSE_DEV_IOC_BACKING_OPEN`) and closed when the last open handle of their
//! inode is released.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// A passthrough backing id of one FUSE connection; closed when dropped.
#[derive(Debug)]
pub struct Backing {
    id: u32,
    device: Arc<OwnedFd>,
}

impl Backing {
    /// Registers `file` as a backing file of the connection `device` is a descriptor of.
    pub fn open(device: &Arc<OwnedFd>, file: &File) -> io::Result<Backing> {
        let id = fuser::BackingId::create_raw(device.as_ref(), file)?;
        Ok(Backing {
            id,
            device: device.clone(),
        })
    }

    /// The id open replies carry.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // After an unmount the connection is gone, and so is the id.
        if let Err(e) = crate::sys::close_backing(self.device.as_ref(), self.id) {
            log::debug!("closing passthrough backing id {}: {e}", self.id);
        }
    }
}
