//! fs-verity digests computed in user space: the Merkle tree of SHA-256 hashes over 4 KiB
//! blocks, without salt, that `FS_IOC_MEASURE_VERITY` reports for a file with fs-verity
//! enabled (`fsverity digest --hash-alg=sha256 --block-size=4096`). Composefs names objects
//! and images by it.

use sha2::{Digest, Sha256};

/// The Merkle tree block size (and data block size): 4 KiB, as composefs uses.
const BLOCK: usize = 4096;
const LOG_BLOCK: u8 = 12;
/// `FS_VERITY_HASH_ALG_SHA256`.
const HASH_ALG_SHA256: u8 = 1;
const ZEROS: [u8; BLOCK] = [0; BLOCK];

/// A streaming fs-verity digest: feed the file's bytes in order with [`update`], then
/// [`finish`]. Memory is one block plus one hash context per tree level.
///
/// [`update`]: FsVerityHasher::update
/// [`finish`]: FsVerityHasher::finish
pub struct FsVerityHasher {
    partial: Box<[u8; BLOCK]>,
    partial_len: usize,
    size: u64,
    /// The data blocks, as a level below the tree's first.
    data: Level,
    /// Tree levels from the leaves' parents up.
    levels: Vec<Level>,
}

/// One level of the Merkle tree: the hashes of the level below, packed into blocks.
#[derive(Default)]
struct Level {
    /// The block being filled.
    context: Sha256,
    filled: usize,
    /// Blocks of this level completed so far.
    blocks: u64,
    /// The first completed block's hash: the root if this level ends with one block, so it
    /// goes up a level only once a second block exists.
    first: Option<[u8; 32]>,
}

impl Default for FsVerityHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FsVerityHasher {
    /// A hasher for an empty file.
    pub fn new() -> Self {
        FsVerityHasher {
            partial: Box::new([0; BLOCK]),
            partial_len: 0,
            size: 0,
            data: Level::default(),
            levels: Vec::new(),
        }
    }

    /// The digest of `bytes`.
    pub fn digest(bytes: &[u8]) -> [u8; 32] {
        let mut hasher = Self::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.partial_len > 0 {
            let take = (BLOCK - self.partial_len).min(bytes.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&bytes[..take]);
            self.partial_len += take;
            bytes = &bytes[take..];
            if self.partial_len < BLOCK {
                return;
            }
            let hash: [u8; 32] = Sha256::digest(&self.partial[..]).into();
            self.partial_len = 0;
            self.complete_data(hash);
        }
        let mut blocks = bytes.chunks_exact(BLOCK);
        for block in &mut blocks {
            self.complete_data(Sha256::digest(block).into());
        }
        let rest = blocks.remainder();
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    /// The file's fs-verity digest: SHA-256 of the `fsverity_descriptor` holding the
    /// Merkle tree's root hash and the file size.
    pub fn finish(mut self) -> [u8; 32] {
        if self.partial_len > 0 {
            let mut hasher = Sha256::new();
            hasher.update(&self.partial[..self.partial_len]);
            hasher.update(&ZEROS[self.partial_len..]);
            self.complete_data(hasher.finalize().into());
        }
        let root = match self.data.blocks {
            0 => [0; 32],
            // A file of one block is its own tree.
            1 => self.data.first.unwrap_or_default(),
            _ => self.finish_levels(),
        };
        let mut descriptor = [0u8; 256];
        descriptor[0] = 1; // version
        descriptor[1] = HASH_ALG_SHA256;
        descriptor[2] = LOG_BLOCK;
        descriptor[8..16].copy_from_slice(&self.size.to_le_bytes());
        descriptor[16..48].copy_from_slice(&root);
        Sha256::digest(descriptor).into()
    }

    fn complete_data(&mut self, hash: [u8; 32]) {
        if let Some(up) = self.data.complete(hash) {
            for hash in up.into_iter().flatten() {
                self.push(0, hash);
            }
        }
    }

    /// Adds a hash of the level below to level `level`.
    fn push(&mut self, level: usize, hash: [u8; 32]) {
        if level == self.levels.len() {
            self.levels.push(Level::default());
        }
        let this = &mut self.levels[level];
        this.context.update(hash);
        this.filled += hash.len();
        if this.filled == BLOCK {
            let block_hash = this.context.finalize_reset().into();
            this.filled = 0;
            self.complete(level, block_hash);
        }
    }

    fn complete(&mut self, level: usize, hash: [u8; 32]) {
        if let Some(up) = self.levels[level].complete(hash) {
            for hash in up.into_iter().flatten() {
                self.push(level + 1, hash);
            }
        }
    }

    /// Pads each level's last block, bottom up, until a level of one block: its hash is
    /// the root.
    fn finish_levels(&mut self) -> [u8; 32] {
        let mut level = 0;
        loop {
            let this = &mut self.levels[level];
            if this.filled > 0 {
                this.context.update(&ZEROS[this.filled..]);
                let hash = this.context.finalize_reset().into();
                this.filled = 0;
                self.complete(level, hash);
            }
            let this = &self.levels[level];
            if this.blocks == 1 {
                return this.first.unwrap_or_default();
            }
            level += 1;
        }
    }
}

impl Level {
    /// Records a completed block of this level; returns the hashes to pass up.
    fn complete(&mut self, hash: [u8; 32]) -> Option<[Option<[u8; 32]>; 2]> {
        self.blocks += 1;
        match self.blocks {
            1 => {
                self.first = Some(hash);
                None
            }
            2 => Some([self.first.take(), Some(hash)]),
            _ => Some([Some(hash), None]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use composefs::fsverity::{Sha256HashValue, compute_verity};
    use zerocopy::IntoBytes;

    fn reference(bytes: &[u8]) -> [u8; 32] {
        let digest: Sha256HashValue = compute_verity(bytes);
        digest.as_bytes().try_into().unwrap()
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn digests_match_composefs_at_tree_shape_boundaries() {
        let hashes_per_block = BLOCK / 32;
        let sizes = [
            0,
            1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            hashes_per_block * BLOCK,
            hashes_per_block * BLOCK + 1,
            (hashes_per_block + 1) * BLOCK,
            hashes_per_block * hashes_per_block * BLOCK + 5,
        ];
        let data = pseudo_random(*sizes.iter().max().unwrap());
        for size in sizes {
            let bytes = &data[..size];
            assert_eq!(
                FsVerityHasher::digest(bytes),
                reference(bytes),
                "size {size}"
            );
            // Fed in odd pieces, the digest is the same.
            let mut hasher = FsVerityHasher::new();
            for piece in bytes.chunks(1000) {
                hasher.update(piece);
            }
            assert_eq!(hasher.finish(), reference(bytes), "size {size} in pieces");
        }
    }
}
