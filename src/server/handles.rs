//! Open files: the server's only state. Files whose content is in the image need none (their
//! handle says so); each open basedir object is kept here, under a handle of its own, with the
//! transport's passthrough backing id if the kernel reads it directly.
//!
//! The kernel requires every open of an inode to use the same backing id, so backing ids are
//! kept per inode and counted: the id goes when the last handle using it is released.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustix::io::Errno;

/// What an open file handle refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handle {
    /// Content in the image (inline, blocks, chunks), or a directory: no per-open state.
    Image,
    /// A metacopy file opened through an overlay view: its content is in the basedir, which
    /// the overlay above reads itself. The overlay still opens the lower file for other
    /// reasons (e.g. reading file attributes during copy-up), so the open succeeds; a read
    /// fails.
    Elsewhere,
    /// An open basedir object in an [`OpenFiles`] table.
    Object(ObjectId),
}

/// Names an open basedir object; only [`OpenFiles`] makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectId(u64);

impl Handle {
    /// The file handle number FUSE carries for [`Handle::Image`].
    const IMAGE_FH: u64 = 0;
    /// The file handle number FUSE carries for [`Handle::Elsewhere`].
    const ELSEWHERE_FH: u64 = u64::MAX;

    /// The handle a FUSE file handle number stands for (the inverse of [`fh`](Self::fh)).
    pub fn from_fh(fh: u64) -> Handle {
        match fh {
            Self::IMAGE_FH => Handle::Image,
            Self::ELSEWHERE_FH => Handle::Elsewhere,
            id => Handle::Object(ObjectId(id)),
        }
    }

    /// The FUSE file handle number for this handle.
    pub fn fh(self) -> u64 {
        match self {
            Handle::Image => Self::IMAGE_FH,
            Handle::Elsewhere => Self::ELSEWHERE_FH,
            Handle::Object(ObjectId(id)) => id,
        }
    }
}

/// The open basedir objects, and the passthrough backing ids (of type `B`, the transport's)
/// of the inodes they belong to.
#[derive(Debug)]
pub struct OpenFiles<B> {
    objects: RwLock<HashMap<u64, OpenObject>>,
    /// Per inode: its backing id and the number of open handles using it.
    backing: Mutex<HashMap<u64, (Arc<B>, usize)>>,
    next_id: AtomicU64,
}

/// An open basedir object.
#[derive(Debug)]
struct OpenObject {
    file: Arc<File>,
    nid: u64,
    /// Whether the kernel reads it through a passthrough backing id.
    passthrough: bool,
}

impl<B> Default for OpenFiles<B> {
    fn default() -> Self {
        OpenFiles {
            objects: RwLock::default(),
            backing: Mutex::default(),
            // Ids start after the image handle's number and never reach the elsewhere one.
            next_id: AtomicU64::new(Handle::IMAGE_FH + 1),
        }
    }
}

impl<B> OpenFiles<B> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `file`, the object of inode `nid`, under a new handle. If the inode already
    /// has a backing id, the handle shares it; otherwise `register` is asked for one
    /// (`None`: the server reads the object itself).
    pub fn open(
        &self,
        nid: u64,
        file: File,
        register: impl FnOnce(&File) -> Option<B>,
    ) -> Result<(Handle, Option<Arc<B>>), Errno> {
        let backing = self.acquire_backing(nid, &file, register)?;
        let id = ObjectId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let object = OpenObject {
            file: Arc::new(file),
            nid,
            passthrough: backing.is_some(),
        };
        match self.objects.write() {
            Ok(mut objects) => objects.insert(id.0, object),
            Err(_) => {
                if backing.is_some() {
                    self.release_backing(nid);
                }
                return Err(Errno::IO);
            }
        };
        Ok((Handle::Object(id), backing))
    }

    /// The object open under `handle`, if it is one.
    pub fn object(&self, handle: Handle) -> Option<Arc<File>> {
        let Handle::Object(id) = handle else {
            return None;
        };
        Some(self.objects.read().ok()?.get(&id.0)?.file.clone())
    }

    /// Forgets `handle` (a no-op for handles that hold nothing), and its inode's backing id
    /// once no handle uses it.
    pub fn release(&self, handle: Handle) {
        let Handle::Object(id) = handle else {
            return;
        };
        let removed = self.objects.write().ok().and_then(|mut o| o.remove(&id.0));
        if let Some(object) = removed.filter(|o| o.passthrough) {
            self.release_backing(object.nid);
        }
    }

    /// How many objects are open.
    pub fn len(&self) -> usize {
        self.objects.read().map_or(0, |o| o.len())
    }

    /// Whether no object is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inode `nid`'s backing id, registering `file` if it has none yet.
    fn acquire_backing(
        &self,
        nid: u64,
        file: &File,
        register: impl FnOnce(&File) -> Option<B>,
    ) -> Result<Option<Arc<B>>, Errno> {
        let mut backing = self.backing.lock().map_err(|_| Errno::IO)?;
        if let Some((id, users)) = backing.get_mut(&nid) {
            *users += 1;
            return Ok(Some(id.clone()));
        }
        Ok(register(file).map(|id| {
            let id = Arc::new(id);
            backing.insert(nid, (id.clone(), 1));
            id
        }))
    }

    fn release_backing(&self, nid: u64) {
        if let Ok(mut backing) = self.backing.lock() {
            if let Some((_, users)) = backing.get_mut(&nid) {
                *users -= 1;
                if *users == 0 {
                    backing.remove(&nid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> File {
        File::open("/dev/null").unwrap()
    }

    #[test]
    fn handles_round_trip_through_fuse_numbers() {
        let files = OpenFiles::<u32>::new();
        let (object, _) = files.open(7, file(), |_| None).unwrap();
        for handle in [Handle::Image, Handle::Elsewhere, object] {
            assert_eq!(Handle::from_fh(handle.fh()), handle);
        }
        assert_eq!(Handle::Image.fh(), 0);
        assert_eq!(Handle::Elsewhere.fh(), u64::MAX);
        assert_ne!(object.fh(), 0);
    }

    #[test]
    fn every_open_of_an_inode_shares_one_backing_id_until_the_last_release() {
        let files = OpenFiles::<u32>::new();
        let registered = std::cell::Cell::new(0);
        let register = |_: &File| {
            registered.set(registered.get() + 1);
            Some(100 + registered.get())
        };
        let (a, id_a) = files.open(7, file(), register).unwrap();
        let (b, id_b) = files.open(7, file(), register).unwrap();
        assert_ne!(a, b);
        assert_eq!((id_a.as_deref(), id_b.as_deref()), (Some(&101), Some(&101)));
        assert_eq!(registered.get(), 1, "the second open reuses the inode's id");
        let (_, other) = files.open(8, file(), register).unwrap();
        assert_eq!(other.as_deref(), Some(&102));
        files.release(a);
        let (_, again) = files.open(7, file(), register).unwrap();
        assert_eq!(again.as_deref(), Some(&101), "one handle still uses it");
        files.release(b);
        assert!(files.object(b).is_none());
    }

    #[test]
    fn released_backing_ids_are_registered_again() {
        let files = OpenFiles::<u32>::new();
        let (a, _) = files.open(7, file(), |_| Some(1)).unwrap();
        files.release(a);
        let (_, id) = files.open(7, file(), |_| Some(2)).unwrap();
        assert_eq!(id.as_deref(), Some(&2));
    }

    #[test]
    fn objects_without_backing_are_read_by_the_server() {
        let files = OpenFiles::<u32>::new();
        let (a, id) = files.open(7, file(), |_| None).unwrap();
        assert!(id.is_none());
        assert!(files.object(a).is_some());
        assert_eq!(files.len(), 1);
        files.release(Handle::Image);
        files.release(Handle::Elsewhere);
        assert_eq!(files.len(), 1, "image handles hold nothing");
        files.release(a);
        assert!(files.is_empty());
        assert!(files.object(Handle::Image).is_none());
    }
}
