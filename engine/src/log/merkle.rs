//! The Merkle tree over the log: RFC 6962 / RFC 9162 hashing, inclusion and
//! consistency proofs, and their verifiers.
//!
//! A leaf is `SHA-256(0x00 ‖ data)`, an interior node `SHA-256(0x01 ‖ left ‖
//! right)`, and the tree of `n` leaves splits at the largest power of two
//! below `n` (RFC 6962 §2.1). Proofs are built by the RFC's recursive
//! definitions (`PATH`, `SUBPROOF`) over a [`NodeSource`], which only ever
//! needs the hashes of perfect, aligned subtrees; the verifiers are the
//! iterative algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2. Both are checked
//! against the published Certificate Transparency test vectors in the tests
//! below. This module does no I/O: where the hashes come from is the
//! caller's business (the log keeps them in `tree/nodes`, see `file::tree`).

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf, a node or a tree's root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The hash of a leaf holding `data`: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// What is wrong with a proof or a request for one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf {index} is not in a tree of {size} leaves")]
    IndexBeyondSize { index: u64, size: u64 },
    /// The sizes of a consistency proof are out of order or beyond the tree.
    #[error("no consistency proof from tree size {from} to {to}: sizes must satisfy 0 < from <= to <= {tree}")]
    BadSizes { from: u64, to: u64, tree: u64 },
    /// The proof has the wrong number of hashes for its sizes.
    #[error("the proof holds {found} hashes; a proof for these sizes holds {expected}")]
    WrongLength { found: usize, expected: usize },
    /// The proof's hashes do not lead to the root it is checked against.
    #[error("the proof does not lead to the root: {0}")]
    Mismatch(&'static str),
}

/// Where proofs get node hashes from: the hash of the perfect subtree of
/// `2^level` leaves starting at leaf `index << level`.
pub trait NodeSource {
    /// What reading a node may fail with.
    type Error: From<ProofError>;
    /// The hash of that subtree; only asked for subtrees inside the tree.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// A tree held in memory as its leaf hashes: for tests, and small trees.
impl NodeSource for [Hash] {
    type Error = ProofError;
    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let start = (index << level) as usize;
        let end = start + (1usize << level);
        if end > self.len() {
            return Err(ProofError::IndexBeyondSize {
                index: end as u64 - 1,
                size: self.len() as u64,
            });
        }
        Ok(root_of_slice(&self[start..end]))
    }
}

/// The root of a tree of these leaf hashes (RFC 6962 `MTH`).
pub fn root_of_slice(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of_slice(&leaves[..k]), &root_of_slice(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of leaves `[start, start + len)`, `len >= 1`, as RFC 6962's
/// `MTH` of that range. `start` is a multiple of the largest power of two
/// not above `len` in every call the recursions below make, so the left
/// part is always a perfect, aligned subtree.
fn range_hash<S: NodeSource + ?Sized>(src: &S, start: u64, len: u64) -> Result<Hash, S::Error> {
    if len.is_power_of_two() {
        let level = len.trailing_zeros();
        return src.node(level, start >> level);
    }
    let k = split(len);
    let left = range_hash(src, start, k)?;
    let right = range_hash(src, start + k, len - k)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves.
pub fn root<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(src, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC
/// 6962 §2.1.1 `PATH`), from the leaf up.
///
/// Errors: [`ProofError::IndexBeyondSize`]; whatever the source fails with.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size }.into());
    }
    let mut proof = Vec::new();
    path(src, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// `PATH(m, D[start:start+len])`, pushed leaf side first.
fn path<S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    len: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if len <= 1 {
        return Ok(());
    }
    let k = split(len);
    if m < k {
        path(src, m, start, k, out)?;
        out.push(range_hash(src, start + k, len - k)?);
    } else {
        path(src, m - k, start + k, len - k, out)?;
        out.push(range_hash(src, start, k)?);
    }
    Ok(())
}

/// The consistency proof from the tree of `from` leaves to that of `to`
/// leaves (RFC 6962 §2.1.2 `PROOF`). Empty when `from == to`.
///
/// Errors: [`ProofError::BadSizes`] unless `0 < from <= to`; whatever the
/// source fails with.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, S::Error> {
    if from == 0 || from > to {
        return Err(ProofError::BadSizes { from, to, tree: to }.into());
    }
    let mut proof = Vec::new();
    subproof(src, from, 0, to, true, &mut proof)?;
    Ok(proof)
}

/// `SUBPROOF(m, D[start:start+len], b)`.
fn subproof<S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    len: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == len {
        if !whole {
            out.push(range_hash(src, start, len)?);
        }
        return Ok(());
    }
    let k = split(len);
    if m <= k {
        subproof(src, m, start, k, whole, out)?;
        out.push(range_hash(src, start + k, len - k)?);
    } else {
        subproof(src, m - k, start + k, len - k, false, out)?;
        out.push(range_hash(src, start, k)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root`, by RFC 9162 §2.1.3.2.
///
/// Errors: [`ProofError::IndexBeyondSize`], [`ProofError::WrongLength`],
/// [`ProofError::Mismatch`].
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            found: proof.len(),
            expected,
        });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::Mismatch("the proof is longer than the path"));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Mismatch("the proof is shorter than the path"));
    }
    if r != *root {
        return Err(ProofError::Mismatch(
            "the computed root differs from the given root",
        ));
    }
    Ok(())
}

/// The number of hashes in an inclusion proof of `index` in `size` leaves.
fn inclusion_len(index: u64, size: u64) -> usize {
    let mut len = 0;
    let (mut fnode, mut snode) = (index, size - 1);
    while snode != 0 {
        // As in `verify_inclusion`: a left child on the right edge skips
        // the levels where it has no sibling.
        if fnode & 1 == 0 && fnode == snode {
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        }
        len += 1;
        fnode >>= 1;
        snode >>= 1;
    }
    len
}

/// Checks that the tree of `to` leaves with root `to_root` extends the tree
/// of `from` leaves with root `from_root`, by RFC 9162 §2.1.4.2.
///
/// Errors: [`ProofError::BadSizes`], [`ProofError::WrongLength`],
/// [`ProofError::Mismatch`].
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::BadSizes { from, to, tree: to });
    }
    if from == to {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                found: proof.len(),
                expected: 0,
            });
        }
        if from_root != to_root {
            return Err(ProofError::Mismatch("equal sizes but different roots"));
        }
        return Ok(());
    }
    let mut hashes: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        hashes.push(*from_root);
    }
    hashes.extend_from_slice(proof);
    let Some((first, rest)) = hashes.split_first() else {
        return Err(ProofError::WrongLength {
            found: 0,
            expected: 1,
        });
    };
    let mut fnode = from - 1;
    let mut snode = to - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if snode == 0 {
            return Err(ProofError::Mismatch("the proof is longer than the path"));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Mismatch("the proof is shorter than the path"));
    }
    if fr != *from_root {
        return Err(ProofError::Mismatch(
            "the proof does not lead to the older root",
        ));
    }
    if sr != *to_root {
        return Err(ProofError::Mismatch(
            "the proof does not lead to the newer root",
        ));
    }
    Ok(())
}

/// That a leaf is in a tree: the leaf's hash, its index, the tree's size
/// and the proof's hashes (leaf side first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The leaf's index (for the log: the event's global position).
    pub index: u64,
    /// The tree's size (a checkpoint's).
    pub size: u64,
    /// The leaf's hash.
    pub leaf: Hash,
    /// The proof.
    pub hashes: Vec<Hash>,
}

impl InclusionProof {
    /// Checks the proof against the root of the tree of `self.size` leaves
    /// (a checkpoint's root). Errors: as [`verify_inclusion`].
    pub fn verify(&self, root: &Hash) -> Result<(), ProofError> {
        verify_inclusion(&self.leaf, self.index, self.size, &self.hashes, root)
    }
}

/// That the tree of `to` leaves extends the tree of `from` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// The proof.
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Checks the proof against the roots of the two trees.
    /// Errors: as [`verify_consistency`].
    pub fn verify(&self, from_root: &Hash, to_root: &Hash) -> Result<(), ProofError> {
        verify_consistency(self.from, self.to, from_root, to_root, &self.hashes)
    }
}

/// The right edge of a growing tree: the roots of its perfect subtrees,
/// largest first. Appending a leaf costs O(1) hashes amortised and yields
/// the nodes it completes, in the post-order the log stores them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)` of each perfect subtree, largest (leftmost) first.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of a tree of `size` leaves, given the hashes of its
    /// perfect subtrees from `nodes(level, index)`.
    pub fn load<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                peaks.push((level, src.node(level, start >> level)?));
                start += 1 << level;
            }
        }
        Ok(Frontier { size, peaks })
    }

    /// How many leaves the tree holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; pushes onto `completed` the leaf and then every
    /// interior node it completes, lowest first.
    pub fn push(&mut self, leaf: Hash, completed: &mut Vec<Hash>) {
        completed.push(leaf);
        let mut level = 0u32;
        let mut hash = leaf;
        while let Some(&(l, left)) = self.peaks.last() {
            if l != level {
                break;
            }
            self.peaks.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            completed.push(hash);
        }
        self.peaks.push((level, hash));
        self.size += 1;
    }

    /// The root of the tree.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Where the node `(level, index)` sits in the post-order list of nodes the
/// log stores (leaf, then the nodes it completes, for each leaf in turn).
pub fn postorder_index(level: u32, index: u64) -> u64 {
    // The node is completed by the append of leaf `last`, after the nodes of
    // a forest of `last` leaves and the `level` nodes below it.
    let last = ((index + 1) << level) - 1;
    nodes_for(last) + u64::from(level)
}

/// How many nodes (leaves and interior) a tree of `size` leaves stores.
pub fn nodes_for(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// The largest tree size whose nodes fit in `nodes` stored nodes.
pub fn size_for_nodes(nodes: u64) -> u64 {
    // nodes_for is increasing; nodes_for(s) >= s, so the answer is <= nodes.
    let (mut lo, mut hi) = (0u64, nodes.min(u64::MAX / 2));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if nodes_for(mid) <= nodes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// The 8 leaves of the Certificate Transparency reference tree.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// Its roots at sizes 0 to 8.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves() -> Vec<Hash> {
        LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect()
    }

    /// (leaf index, tree size, proof) from the reference vectors.
    fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (0, 1, vec![]),
            (
                0,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                5,
                8,
                vec![
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                3,
                vec![h(
                    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                )],
            ),
            (
                1,
                5,
                vec![
                    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
        ]
    }

    /// (from, to, proof) from the reference vectors.
    fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                6,
                8,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                5,
                vec![
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
        ]
    }

    #[test]
    fn roots_match_the_reference_tree() {
        let leaves = leaves();
        assert_eq!(empty_root(), h(ROOTS[0]));
        for n in 0..=8 {
            assert_eq!(
                root(&leaves[..], n as u64).unwrap(),
                h(ROOTS[n]),
                "size {n}"
            );
            assert_eq!(root_of_slice(&leaves[..n]), h(ROOTS[n]), "size {n}");
        }
    }

    #[test]
    fn the_frontier_tracks_the_roots_and_stores_nodes_in_postorder() {
        let leaves = leaves();
        let mut frontier = Frontier::default();
        let mut stored = Vec::new();
        for (n, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf, &mut stored);
            assert_eq!(frontier.root(), h(ROOTS[n + 1]), "size {}", n + 1);
            assert_eq!(stored.len() as u64, nodes_for(n as u64 + 1));
            assert_eq!(size_for_nodes(stored.len() as u64), n as u64 + 1);
            let loaded = Frontier::load(&leaves[..], n as u64 + 1).unwrap();
            assert_eq!(loaded, frontier);
        }
        for level in 0..=3u32 {
            for index in 0..(8u64 >> level) {
                let at = postorder_index(level, index) as usize;
                assert_eq!(stored[at], leaves[..].node(level, index).unwrap());
            }
        }
        assert_eq!(size_for_nodes(nodes_for(8) - 1), 7);
    }

    #[test]
    fn inclusion_proofs_match_the_reference_vectors() {
        let leaves = leaves();
        for (index, size, proof) in inclusion_vectors() {
            assert_eq!(
                inclusion_proof(&leaves[..], index, size).unwrap(),
                proof,
                "leaf {index} of {size}"
            );
            let root = h(ROOTS[size as usize]);
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_vectors() {
        let leaves = leaves();
        for (from, to, proof) in consistency_vectors() {
            assert_eq!(
                consistency_proof(&leaves[..], from, to).unwrap(),
                proof,
                "{from} to {to}"
            );
            let (a, b) = (h(ROOTS[from as usize]), h(ROOTS[to as usize]));
            verify_consistency(from, to, &a, &b, &proof).unwrap();
        }
    }

    fn many(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
            .collect()
    }

    /// Every proof of every tree up to 40 leaves verifies, and altering any
    /// bit of it, its length, its index or the leaf makes it fail. (A size
    /// is not altered alone: a root is only meaningful with its own size,
    /// which the signed checkpoint binds.)
    #[test]
    fn every_proof_verifies_and_no_altered_one_does() {
        let leaves = many(40);
        for size in 1..=40u64 {
            let root = root_of_slice(&leaves[..size as usize]);
            for index in 0..size {
                let leaf = leaves[index as usize];
                let proof = inclusion_proof(&leaves[..], index, size).unwrap();
                verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][i % 32] ^= 1 << (i % 8);
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
                let mut longer = proof.clone();
                longer.push(leaf);
                assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(&leaf, index, size, shorter, &root).is_err());
                }
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
                }
                assert!(verify_inclusion(&leaf, size, size, &proof, &root).is_err());
                let mut wrong_leaf = leaf;
                wrong_leaf[0] ^= 1;
                assert!(verify_inclusion(&wrong_leaf, index, size, &proof, &root).is_err());
            }
            for from in 1..=size {
                let old = root_of_slice(&leaves[..from as usize]);
                let proof = consistency_proof(&leaves[..], from, size).unwrap();
                verify_consistency(from, size, &old, &root, &proof).unwrap();
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][31 - i % 32] ^= 0x80 >> (i % 8);
                    assert!(verify_consistency(from, size, &old, &root, &bad).is_err());
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert!(verify_consistency(from, size, &old, &root, &longer).is_err());
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_consistency(from, size, &old, &root, shorter).is_err());
                }
                let mut other_old = old;
                other_old[5] ^= 4;
                assert!(verify_consistency(from, size, &other_old, &root, &proof).is_err());
                if from > 1 && from < size {
                    assert!(verify_consistency(from - 1, size, &old, &root, &proof).is_err());
                }
            }
        }
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let leaves = many(5);
        assert_eq!(
            inclusion_proof(&leaves[..], 5, 5),
            Err(ProofError::IndexBeyondSize { index: 5, size: 5 })
        );
        assert!(matches!(
            consistency_proof(&leaves[..], 0, 5),
            Err(ProofError::BadSizes { .. })
        ));
        assert!(matches!(
            consistency_proof(&leaves[..], 4, 3),
            Err(ProofError::BadSizes { .. })
        ));
        assert!(inclusion_proof(&leaves[..], 1, 6).is_err());
        let root = root_of_slice(&leaves);
        assert!(verify_inclusion(&leaves[0], 0, 0, &[], &root).is_err());
        assert!(verify_consistency(0, 5, &root, &root, &[]).is_err());
        assert!(verify_consistency(3, 3, &root, &root, &[root]).is_err());
    }
}
