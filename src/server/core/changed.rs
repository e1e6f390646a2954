//! When the image file changes under the mapping ([`Image::changed`](crate::erofs::Image::changed)):
//! nothing read from it since can be trusted (zeros where a page was lost, new bytes where it
//! was rewritten), so the core answers EIO, and the transports ask again before sending.

use std::sync::atomic::Ordering;

use super::{Core, Errno};

impl<B> Core<B> {
    /// EIO once the image file changed under the mapping ([`Image::changed`](crate::erofs::Image::changed)): nothing read
    /// from it since can be trusted (zeros where a page was lost, new bytes where it was
    /// rewritten), so every request that reads it fails, as the kernel fails what it has not
    /// cached; what the kernel cached from earlier answers stays. Transports ask again after
    /// building a reply from the mapping and before sending it, so a request that the change
    /// overtook fails too.
    pub fn image_intact(&self) -> Result<(), Errno> {
        if !self.image.changed() {
            return Ok(());
        }
        if !self.change_logged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "the image file changed while mounted (rewritten, truncated or unreadable): \
                 requests that read it answer EIO from now on; remount to serve the new file"
            );
        }
        Err(Errno::IO)
    }

    /// `result` as it may be sent: EIO instead of an answer or an error (ENOENT, ENODATA...)
    /// decoded from an image that changed meanwhile. ENOSYS (a refusal that read nothing)
    /// stays.
    pub fn checked<T>(&self, result: Result<T, Errno>) -> Result<T, Errno> {
        match result {
            Err(Errno::NOSYS) => result,
            _ => self.image_intact().and(result),
        }
    }
}

/// `bytes`, each of whose pages has been read once. File data goes to the kernel straight
/// from the mapping (`writev` on `/dev/fuse`), and a page lost under the mapping would fail
/// the kernel's copy (EFAULT, the reader gets EIO) without the SIGBUS that marks the image
/// changed: read here, such a page faults in this process, so the transports' last check
/// ([`Core::checked`]) refuses the reply. One load per page.
pub(super) fn touched(bytes: &[u8]) -> &[u8] {
    const PAGE: usize = 4096;
    for offset in (0..bytes.len()).step_by(PAGE) {
        std::hint::black_box(bytes[offset]);
    }
    if let Some(last) = bytes.last() {
        std::hint::black_box(*last);
    }
    bytes
}
