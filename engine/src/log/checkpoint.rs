//! Signed checkpoints of the log's Merkle tree, in the C2SP
//! `tlog-checkpoint` signed-note format.
//!
//! A checkpoint commits to the first `size` events of a log named by its
//! origin through the root of their tree ([`crate::log::merkle`]). As a note
//! it reads
//!
//! ```text
//! casebook/0190c1e4-…          origin: names the log
//! 1042                         tree size (events)
//! 2Y1Fv…Yw=                    root hash, base64
//!                              a blank line
//! — casebook/0190c1e4-… AbCd…  a signature line per signer
//! ```
//!
//! Each signature line is `— <key name> <base64(key id ‖ signature)>`, where
//! the key id is the first 4 bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public
//! key)` and the signature an Ed25519 signature of the note's text up to
//! and including the newline before the blank line (C2SP `signed-note`).
//! Verification is strict (`verify_strict`). A force that keeps a copy of a
//! checkpoint can later show that the log still extends it.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;
use crate::error::ErrorKind;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// What starts a signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// The signature type byte of Ed25519 keys in signed notes.
const ED25519_TYPE: u8 = 0x01;

/// What is wrong with a checkpoint or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a well-formed checkpoint note.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// No signature line is by the key it was checked with.
    #[error("the checkpoint carries no signature by key {key} (it is signed by: {found})")]
    NotSignedBy { key: String, found: String },
    /// A signature line by the key does not verify.
    #[error("the checkpoint's signature by key {key} does not verify: the note was altered or signed by another key")]
    BadSignature { key: String },
    /// A key (a name, a verifier string, a key file) is malformed.
    #[error("malformed checkpoint key: {0}")]
    BadKey(String),
}

impl CheckpointError {
    /// How the caller should treat it: every case is a bad input.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CheckpointError::BadKey(_) => ErrorKind::invalid("key"),
            _ => ErrorKind::invalid("checkpoint"),
        }
    }
}

/// A tree head: the log named `origin` holds `size` events whose tree has
/// this `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log (unique per store).
    pub origin: String,
    /// How many events the tree covers (positions `0..size`).
    pub size: u64,
    /// The root of their Merkle tree.
    pub root: Hash,
}

impl Checkpoint {
    /// The signed text: origin, size and root, each on its own line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }
}

/// A checkpoint note: the parsed checkpoint and the note's whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    /// The signed body (with any extension lines), as it appears in the note.
    body: String,
    /// `(key name, key id, signature)` of each signature line.
    signatures: Vec<(String, [u8; 4], [u8; 64])>,
}

impl SignedCheckpoint {
    /// Parses a checkpoint note. Its signatures are not checked: see
    /// [`SignedCheckpoint::verify`].
    ///
    /// Errors: [`CheckpointError::Malformed`], saying what is wrong.
    pub fn parse(note: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.to_string());
        let Some(split) = note.find("\n\n") else {
            return Err(bad("no blank line separates the text from its signatures"));
        };
        let body = &note[..split + 1];
        let sigs = &note[split + 2..];
        let mut lines = body.lines();
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("the first line (the origin) is empty"));
        }
        let size = lines
            .next()
            .ok_or_else(|| bad("the tree size line is missing"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || size.starts_with("0") && size.len() > 1
        {
            return Err(bad("the second line is not a tree size in decimal"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad("the tree size does not fit 64 bits"))?;
        let root = lines
            .next()
            .ok_or_else(|| bad("the root hash line is missing"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the third line is not a base64 SHA-256 root hash"))?;
        if !sigs.ends_with('\n') {
            return Err(bad("the note does not end with a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
                return Err(bad("a signature line does not start with an em dash"));
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                return Err(bad("a signature line lacks its key name or signature"));
            };
            let sig = B64
                .decode(sig)
                .map_err(|_| bad("a signature is not base64"))?;
            if sig.len() < 4 {
                return Err(bad("a signature is shorter than its key id"));
            }
            let mut id = [0u8; 4];
            id.copy_from_slice(&sig[..4]);
            // Other signature types (cosignatures...) are kept unchecked.
            let mut bytes = [0u8; 64];
            if sig.len() == 68 {
                bytes.copy_from_slice(&sig[4..]);
            }
            signatures.push((name.to_string(), id, bytes));
        }
        if signatures.is_empty() {
            return Err(bad("the note carries no signature"));
        }
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                origin: origin.to_string(),
                size,
                root,
            },
            body: body.to_string(),
            signatures,
        })
    }

    /// The checkpoint, unverified.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The extension lines after the root (signed with it), unverified.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.body.lines().skip(3)
    }

    /// The note's text.
    pub fn note(&self) -> String {
        let mut note = self.body.clone();
        note.push('\n');
        for (name, id, sig) in &self.signatures {
            let mut bytes = Vec::with_capacity(68);
            bytes.extend_from_slice(id);
            bytes.extend_from_slice(sig);
            note.push_str(SIG_PREFIX);
            note.push_str(name);
            note.push(' ');
            note.push_str(&B64.encode(bytes));
            note.push('\n');
        }
        note
    }

    /// The checkpoint, once a signature by `key` verifies.
    ///
    /// Errors: [`CheckpointError::NotSignedBy`], [`CheckpointError::BadSignature`].
    pub fn verify(&self, key: &CheckpointVerifier) -> Result<&Checkpoint, CheckpointError> {
        let id = key.key_id();
        let mut found = Vec::new();
        for (name, sig_id, sig) in &self.signatures {
            if *name == key.name && *sig_id == id {
                let sig = ed25519_dalek::Signature::from_bytes(sig);
                return key
                    .key
                    .verify_strict(self.body.as_bytes(), &sig)
                    .map(|()| &self.checkpoint)
                    .map_err(|_| CheckpointError::BadSignature {
                        key: key.name.clone(),
                    });
            }
            found.push(name.as_str());
        }
        Err(CheckpointError::NotSignedBy {
            key: key.name.clone(),
            found: found.join(", "),
        })
    }
}

/// The key that signs a log's checkpoints: a name (the log's origin) and an
/// Ed25519 signing key.
#[derive(Clone)]
pub struct CheckpointSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// The signer named `name` with the Ed25519 key of this 32-byte seed.
    ///
    /// Errors: [`CheckpointError::BadKey`] if the name is empty or holds a
    /// space, `+` or a line break.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CheckpointError> {
        check_name(name)?;
        Ok(CheckpointSigner {
            name: name.to_string(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// A new signer with a random key.
    ///
    /// Errors: [`CheckpointError::BadKey`] as [`CheckpointSigner::from_seed`],
    /// or if the system has no randomness to give.
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| CheckpointError::BadKey(format!("no randomness for a new key: {e}")))?;
        Self::from_seed(name, &seed)
    }

    /// The 32-byte seed, to store the key.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What checks its signatures.
    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> SignedCheckpoint {
        self.sign_with_extensions(checkpoint, &[])
    }

    /// Signs `checkpoint` with extension lines after its root (C2SP
    /// allows them; the signature covers them). A line holding a line
    /// break, or an empty one, would change the note's shape: they are
    /// left out.
    pub fn sign_with_extensions(
        &self,
        checkpoint: &Checkpoint,
        extensions: &[String],
    ) -> SignedCheckpoint {
        let mut body = checkpoint.body();
        for line in extensions {
            if !line.is_empty() && !line.contains('\n') {
                body.push_str(line);
                body.push('\n');
            }
        }
        let sig = self.key.sign(body.as_bytes()).to_bytes();
        SignedCheckpoint {
            checkpoint: checkpoint.clone(),
            body,
            signatures: vec![(self.name.clone(), self.verifier().key_id(), sig)],
        }
    }
}

/// Checks a log's checkpoint signatures: a key name and an Ed25519 public
/// key. Its text form is the signed-note verifier key
/// `<name>+<key id, 8 hex digits>+<base64(0x01 ‖ public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVerifier {
    name: String,
    key: VerifyingKey,
}

impl CheckpointVerifier {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id signature lines carry.
    pub fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([ED25519_TYPE]);
        h.update(self.key.as_bytes());
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }

    /// Parses the text form (see the type's docs).
    ///
    /// Errors: [`CheckpointError::BadKey`], saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::BadKey(m.to_string());
        // The name and the hex id hold no `+`; standard base64 may.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<key id>+<base64 key>"));
        };
        check_name(name)?;
        let key = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        if key.len() != 33 || key[0] != ED25519_TYPE {
            return Err(bad(
                "the key is not an Ed25519 key (type 0x01 and 32 bytes)",
            ));
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key[1..]);
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| bad("the key is not a valid Ed25519 point"))?;
        let verifier = CheckpointVerifier {
            name: name.to_string(),
            key,
        };
        if id != hex(&verifier.key_id()) {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(verifier)
    }
}

impl std::fmt::Display for CheckpointVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ED25519_TYPE];
        key.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex(&self.key_id()),
            B64.encode(key)
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains([' ', '+', '\n', '\r', '\t']) {
        return Err(CheckpointError::BadKey(format!(
            "key name {name:?} must be non-empty without spaces, `+` or line breaks"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CheckpointSigner {
        CheckpointSigner::from_seed("casebook/test", &[7u8; 32]).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "casebook/test".into(),
            size: 1042,
            root: [9u8; 32],
        }
    }

    #[test]
    fn a_signed_checkpoint_round_trips_and_verifies() {
        let signer = signer();
        let note = signer.sign(&checkpoint()).note();
        let lines: Vec<&str> = note.lines().collect();
        assert_eq!(lines[0], "casebook/test");
        assert_eq!(lines[1], "1042");
        assert_eq!(lines[2], B64.encode([9u8; 32]));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} casebook/test "));
        let parsed = SignedCheckpoint::parse(&note).unwrap();
        assert_eq!(parsed.note(), note);
        assert_eq!(parsed.verify(&signer.verifier()).unwrap(), &checkpoint());
        let vkey = signer.verifier().to_string();
        assert_eq!(CheckpointVerifier::parse(&vkey).unwrap(), signer.verifier());
    }

    #[test]
    fn a_verifier_key_whose_base64_holds_a_plus_reads_back() {
        let mut with_plus = 0;
        for seed in 0..=255u8 {
            let signer = CheckpointSigner::from_seed("casebook/test", &[seed; 32]).unwrap();
            let vkey = signer.verifier().to_string();
            with_plus += usize::from(vkey.matches('+').count() > 2);
            assert_eq!(
                CheckpointVerifier::parse(&vkey).unwrap(),
                signer.verifier(),
                "{vkey}"
            );
        }
        assert!(
            with_plus > 0,
            "no key of the sample had a `+` in its base64"
        );
    }

    #[test]
    fn any_altered_byte_or_another_key_is_refused() {
        let signer = signer();
        let note = signer.sign(&checkpoint()).note();
        for i in 0..note.len() {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            if let Ok(parsed) = SignedCheckpoint::parse(&text) {
                let verified = parsed.verify(&signer.verifier());
                // Base64 padding bits may flip without changing the bytes.
                if let Ok(c) = verified {
                    assert_eq!(c, &checkpoint(), "byte {i}");
                    assert_eq!(parsed.body, checkpoint().body(), "byte {i}");
                }
            }
        }
        let other = CheckpointSigner::from_seed("casebook/test", &[8u8; 32]).unwrap();
        let parsed = SignedCheckpoint::parse(&note).unwrap();
        assert!(matches!(
            parsed.verify(&other.verifier()),
            Err(CheckpointError::NotSignedBy { .. })
        ));
    }

    #[test]
    fn malformed_notes_and_keys_are_typed_errors() {
        for text in [
            "",
            "origin\n",
            "origin\n12\n\n— k AAAA\n",
            "origin\nx\nAAAA\n\n— k AAAA\n",
            "origin\n12\nnot base64!\n\n— k AAAA\n",
            "origin\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n\n",
            "origin\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n\nno dash\n",
        ] {
            let err = SignedCheckpoint::parse(text).unwrap_err();
            assert!(matches!(err, CheckpointError::Malformed(_)), "{text:?}");
            assert!(matches!(err.kind(), ErrorKind::InvalidArgument { .. }));
        }
        for key in ["", "a+b", "a+00000000+AAAA", "a b+00+AA"] {
            assert!(CheckpointVerifier::parse(key).is_err(), "{key:?}");
        }
        assert!(CheckpointSigner::from_seed("has space", &[1; 32]).is_err());
    }
}
