//! A stable content fingerprint: SHA-256 of the canonical JSON form.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::CaseDefinition;

/// The SHA-256 of a definition's canonical serialization.
///
/// Two documents that parse to the same model (whatever their format, key
/// order, comments or spelled-out defaults) have the same fingerprint, so a
/// runtime can treat deploying the same definition twice as a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl CaseDefinition {
    /// The definition's canonical form: compact JSON of the model, fields in
    /// declaration order, maps sorted by key, conditions as written.
    pub fn canonical_json(&self) -> String {
        // Serializing plain structs, vectors and string-keyed BTreeMaps to JSON
        // cannot fail; an empty string would still hash deterministically.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The SHA-256 of [`CaseDefinition::canonical_json`].
    /// Computed once per definition value (every opening records it).
    pub fn fingerprint(&self) -> Fingerprint {
        *self
            .fingerprint
            .0
            .get_or_init(|| Fingerprint(sha256(self.canonical_json().as_bytes())))
    }
}

/// Where a definition keeps its fingerprint once computed. A clone starts
/// empty (its fields are public: a changed copy must not keep the
/// original's fingerprint); it takes no part in equality or the stored form.
#[derive(Debug, Default)]
pub(crate) struct FingerprintCache(std::sync::OnceLock<Fingerprint>);

impl Clone for FingerprintCache {
    fn clone(&self) -> Self {
        FingerprintCache::default()
    }
}

impl PartialEq for FingerprintCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: [u8; 32]) -> String {
        Fingerprint(b).to_string()
    }

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }
}
