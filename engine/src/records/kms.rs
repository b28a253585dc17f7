//! Data keys for crypto-shredding: the [`Kms`] seam, a file-backed key
//! store in the data directory ([`FileKms`], works offline) and an
//! in-memory one ([`MemoryKms`]) for in-memory engines.
//!
//! A data key (DEK) exists per `(tenant, key id)`; a key id is a subject's
//! id ([`super::SubjectId`]), which holds no personal data. Every DEK is kept
//! only *wrapped*: sealed with XChaCha20-Poly1305 under the tenant's key
//! (KEK), the associated data binding tenant and key id, so a wrapped key
//! copied to another tenant or key id does not open. Destroying a DEK
//! deletes its wrapped copy and leaves a tombstone naming the erasure
//! certificate, so a read can tell "erased" (and by which certificate) from
//! "missing" (a lost or deleted key file, an error).
//!
//! On disk (`FileKms`): `<data>/keys/t-<tenant>/kek` (32 random bytes, mode
//! 0600), `<key id>.dek` (24-byte nonce then the wrapped key) and
//! `<key id>.erased` (the certificate reference). Writes go to a temporary
//! file, are synced, renamed into place and the folder synced. All file I/O
//! runs under `spawn_blocking`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::ErrorKind;
use crate::log::TenantId;

/// Bytes of a data key and of a tenant key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// A data key in memory: wiped when dropped.
pub struct DataKey(Zeroizing<[u8; KEY_BYTES]>);

impl DataKey {
    /// A fresh random key.
    ///
    /// Errors: [`KmsError::Random`] if the OS has no randomness to give.
    pub fn random() -> Result<Self, KmsError> {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(&mut key[..]).map_err(|e| KmsError::Random(e.to_string()))?;
        Ok(DataKey(key))
    }

    /// The key's bytes (to store a tenant key).
    #[cfg(feature = "postgres")]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// A key from stored bytes; `None` unless there are [`KEY_BYTES`].
    #[cfg(feature = "postgres")]
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        if bytes.len() != KEY_BYTES {
            return None;
        }
        key.copy_from_slice(bytes);
        Some(DataKey(key))
    }

    /// The cipher of this key.
    pub(crate) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.0).into())
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// What the key store holds for a key id.
#[derive(Debug)]
pub enum KeyLookup {
    /// The live key.
    Key(DataKey),
    /// Destroyed by an erasure: the certificate's reference (the id of the
    /// `SubjectErased` event).
    Destroyed {
        /// The erasure certificate's event id.
        certificate: String,
    },
    /// Never made (or its file lost: the caller decides which it means).
    Absent,
}

/// A key-store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// A key id is not 1–64 ASCII lower-case letters and digits.
    #[error("'{key_id}' is not a key id (1-64 lower-case letters and digits)")]
    InvalidKeyId {
        /// The id given (cut to 64 characters).
        key_id: String,
    },
    /// The tenant's key file is gone while data keys wrapped under it remain:
    /// they cannot be opened. Restore `kek` from the key store's backup.
    #[error("the key of tenant {tenant} is missing while its data keys remain; restore {path} from the key store's backup")]
    TenantKeyMissing {
        /// The tenant.
        tenant: TenantId,
        /// The missing file.
        path: String,
    },
    /// A wrapped data key does not open under the tenant's key (a wrong or
    /// replaced tenant key, or a damaged key file).
    #[error("data key {key_id} of tenant {tenant} does not open under the tenant key (wrong tenant key or damaged key file)")]
    Unwrap {
        /// The tenant.
        tenant: TenantId,
        /// The key id.
        key_id: String,
    },
    /// A key file has the wrong length.
    #[error("key file {path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The OS gave no randomness.
    #[error("no randomness for a key: {0}")]
    Random(String),
    /// File I/O failed.
    #[error("key store I/O on {path}: {detail}")]
    Io {
        /// The file or folder.
        path: String,
        /// The OS error.
        detail: String,
    },
}

impl KmsError {
    /// [`ErrorKind::InvalidArgument`] for a bad key id; the rest are
    /// [`ErrorKind::Internal`] (the key store, not the request, is wrong).
    pub fn kind(&self) -> ErrorKind {
        match self {
            KmsError::InvalidKeyId { .. } => ErrorKind::invalid("key_id"),
            KmsError::Io { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// Checks a key id: 1–64 ASCII lower-case letters and digits (a subject
/// id's form, and safe as a file name).
///
/// Errors: [`KmsError::InvalidKeyId`].
pub fn check_key_id(key_id: &str) -> Result<(), KmsError> {
    let ok = !key_id.is_empty()
        && key_id.len() <= 64
        && key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(KmsError::InvalidKeyId {
            key_id: key_id.chars().take(64).collect(),
        })
    }
}

/// Where data keys live, each wrapped by its tenant's key. Object safe (the
/// engine holds an `Arc<dyn Kms>`); a cloud KMS would implement it behind
/// a cargo feature.
#[async_trait]
pub trait Kms: Send + Sync + std::fmt::Debug + 'static {
    /// The data key `key_id` of `tenant`; if it was never made and
    /// `create`, a new random one is made, stored wrapped, and returned.
    ///
    /// Errors: [`KmsError`] (an invalid key id, a missing tenant key, a
    /// key that does not unwrap, I/O).
    async fn data_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        create: bool,
    ) -> Result<KeyLookup, KmsError>;

    /// Destroys the data key `key_id` of `tenant`, leaving a tombstone
    /// naming `certificate`. Destroying a destroyed key keeps its first
    /// certificate; destroying one never made records the tombstone.
    ///
    /// Errors: [`KmsError`] (invalid key id, I/O).
    async fn destroy(
        &self,
        tenant: &TenantId,
        key_id: &str,
        certificate: &str,
    ) -> Result<(), KmsError>;
}

fn aad(tenant: &TenantId, key_id: &str) -> Vec<u8> {
    let mut aad = b"casebook dek wrap v1\0".to_vec();
    aad.extend_from_slice(tenant.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

pub(crate) fn wrap(
    kek: &DataKey,
    tenant: &TenantId,
    key_id: &str,
    dek: &DataKey,
) -> Result<Vec<u8>, KmsError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| KmsError::Random(e.to_string()))?;
    let aad = aad(tenant, key_id);
    let sealed = kek
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &dek.0[..],
                aad: &aad,
            },
        )
        .map_err(|_| KmsError::Random("wrapping failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub(crate) fn unwrap(
    kek: &DataKey,
    tenant: &TenantId,
    key_id: &str,
    wrapped: &[u8],
) -> Result<DataKey, KmsError> {
    let failed = || KmsError::Unwrap {
        tenant: tenant.clone(),
        key_id: key_id.to_string(),
    };
    if wrapped.len() != NONCE_BYTES + KEY_BYTES + 16 {
        return Err(failed());
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| failed())?;
    let aad = aad(tenant, key_id);
    let plain = Zeroizing::new(
        kek.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| failed())?,
    );
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    key.copy_from_slice(&plain);
    Ok(DataKey(key))
}

/// The in-memory key store of an in-memory engine: a random tenant key per
/// tenant, wrapped data keys in a map; nothing survives the process.
#[derive(Default)]
pub struct MemoryKms {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    keks: HashMap<TenantId, Arc<DataKey>>,
    wrapped: HashMap<(TenantId, String), Vec<u8>>,
    destroyed: HashMap<(TenantId, String), String>,
}

impl std::fmt::Debug for MemoryKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryKms(..)")
    }
}

#[async_trait]
impl Kms for MemoryKms {
    async fn data_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        create: bool,
    ) -> Result<KeyLookup, KmsError> {
        check_key_id(key_id)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let at = (tenant.clone(), key_id.to_string());
        if let Some(certificate) = state.destroyed.get(&at) {
            return Ok(KeyLookup::Destroyed {
                certificate: certificate.clone(),
            });
        }
        let kek = match state.keks.get(tenant) {
            Some(k) => Arc::clone(k),
            None => {
                let k = Arc::new(DataKey::random()?);
                state.keks.insert(tenant.clone(), Arc::clone(&k));
                k
            }
        };
        if let Some(w) = state.wrapped.get(&at) {
            return Ok(KeyLookup::Key(unwrap(&kek, tenant, key_id, w)?));
        }
        if !create {
            return Ok(KeyLookup::Absent);
        }
        let dek = DataKey::random()?;
        let w = wrap(&kek, tenant, key_id, &dek)?;
        state.wrapped.insert(at, w);
        Ok(KeyLookup::Key(dek))
    }

    async fn destroy(
        &self,
        tenant: &TenantId,
        key_id: &str,
        certificate: &str,
    ) -> Result<(), KmsError> {
        check_key_id(key_id)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let at = (tenant.clone(), key_id.to_string());
        state.wrapped.remove(&at);
        state
            .destroyed
            .entry(at)
            .or_insert_with(|| certificate.to_string());
        Ok(())
    }
}

/// The file-backed key store in `<data>/keys` (see the module docs).
/// Clones share the store.
#[derive(Debug, Clone)]
pub struct FileKms {
    dir: PathBuf,
    /// Serialises creation, so two readers never make two keys for one id.
    lock: Arc<Mutex<()>>,
}

impl FileKms {
    /// The key store in `dir` (made on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileKms {
            dir: dir.into(),
            lock: Arc::default(),
        }
    }

    /// The folder of `tenant`'s keys.
    pub fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.dir.join(format!("t-{}", tenant.as_str()))
    }
}

fn io(path: &Path, e: std::io::Error) -> KmsError {
    KmsError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, KmsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// Writes `bytes` to `path` durably: a synced temporary file renamed into
/// place, then the folder synced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), KmsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), KmsError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn key_of(path: &Path, bytes: &[u8]) -> Result<DataKey, KmsError> {
    let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| KmsError::Damaged {
        path: path.display().to_string(),
        detail: format!("{} bytes, not {KEY_BYTES}", bytes.len()),
    })?;
    Ok(DataKey(Zeroizing::new(key)))
}

impl FileKms {
    /// The tenant's key, made if the tenant has none and no data key yet.
    fn kek(&self, tenant: &TenantId) -> Result<DataKey, KmsError> {
        let dir = self.tenant_dir(tenant);
        let path = dir.join("kek");
        if let Some(bytes) = read_opt(&path)? {
            return key_of(&path, &Zeroizing::new(bytes));
        }
        let has_keys = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".dek")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(&dir, e)),
        };
        if has_keys {
            return Err(KmsError::TenantKeyMissing {
                tenant: tenant.clone(),
                path: path.display().to_string(),
            });
        }
        let kek = DataKey::random()?;
        write_durably(&path, &kek.0[..])?;
        Ok(kek)
    }

    fn data_key_blocking(
        &self,
        tenant: &TenantId,
        key_id: &str,
        create: bool,
    ) -> Result<KeyLookup, KmsError> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.tenant_dir(tenant);
        if let Some(certificate) = read_opt(&dir.join(format!("{key_id}.erased")))? {
            return Ok(KeyLookup::Destroyed {
                certificate: String::from_utf8_lossy(&certificate).into_owned(),
            });
        }
        let path = dir.join(format!("{key_id}.dek"));
        let wrapped = read_opt(&path)?;
        if wrapped.is_none() && !create {
            return Ok(KeyLookup::Absent);
        }
        let kek = self.kek(tenant)?;
        if let Some(w) = wrapped {
            return Ok(KeyLookup::Key(unwrap(&kek, tenant, key_id, &w)?));
        }
        let dek = DataKey::random()?;
        write_durably(&path, &wrap(&kek, tenant, key_id, &dek)?)?;
        Ok(KeyLookup::Key(dek))
    }

    fn destroy_blocking(
        &self,
        tenant: &TenantId,
        key_id: &str,
        certificate: &str,
    ) -> Result<(), KmsError> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.tenant_dir(tenant);
        let tombstone = dir.join(format!("{key_id}.erased"));
        if read_opt(&tombstone)?.is_none() {
            write_durably(&tombstone, certificate.as_bytes())?;
        }
        let path = dir.join(format!("{key_id}.dek"));
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
    }
}

fn joined<T>(r: Result<Result<T, KmsError>, tokio::task::JoinError>) -> Result<T, KmsError> {
    r.unwrap_or_else(|e| {
        Err(KmsError::Io {
            path: "key store".into(),
            detail: e.to_string(),
        })
    })
}

#[async_trait]
impl Kms for FileKms {
    async fn data_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        create: bool,
    ) -> Result<KeyLookup, KmsError> {
        check_key_id(key_id)?;
        let this = self.clone();
        let (tenant, key_id) = (tenant.clone(), key_id.to_string());
        joined(
            tokio::task::spawn_blocking(move || this.data_key_blocking(&tenant, &key_id, create))
                .await,
        )
    }

    async fn destroy(
        &self,
        tenant: &TenantId,
        key_id: &str,
        certificate: &str,
    ) -> Result<(), KmsError> {
        check_key_id(key_id)?;
        let this = self.clone();
        let (tenant, key_id, certificate) =
            (tenant.clone(), key_id.to_string(), certificate.to_string());
        joined(
            tokio::task::spawn_blocking(move || {
                this.destroy_blocking(&tenant, &key_id, &certificate)
            })
            .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    fn bytes(k: &KeyLookup) -> [u8; KEY_BYTES] {
        match k {
            KeyLookup::Key(k) => *k.0,
            other => panic!("expected a key, got {other:?}"),
        }
    }

    async fn round_trip(kms: &dyn Kms) {
        let (a, b) = (tenant("a"), tenant("b"));
        let k1 = bytes(&kms.data_key(&a, "n1", true).await.unwrap());
        assert_eq!(bytes(&kms.data_key(&a, "n1", false).await.unwrap()), k1);
        assert!(matches!(
            kms.data_key(&a, "n2", false).await.unwrap(),
            KeyLookup::Absent
        ));
        // Another tenant's key of the same id is another key.
        assert_ne!(bytes(&kms.data_key(&b, "n1", true).await.unwrap()), k1);
        kms.destroy(&a, "n1", "cert-1").await.unwrap();
        kms.destroy(&a, "n1", "cert-2").await.unwrap();
        for create in [false, true] {
            match kms.data_key(&a, "n1", create).await.unwrap() {
                KeyLookup::Destroyed { certificate } => assert_eq!(certificate, "cert-1"),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            kms.data_key(&a, "N/../x", true).await,
            Err(KmsError::InvalidKeyId { .. })
        ));
    }

    #[tokio::test]
    async fn keys_are_made_once_kept_per_tenant_and_destroyed_for_good() {
        round_trip(&MemoryKms::default()).await;
        let dir = tempfile::tempdir().unwrap();
        round_trip(&FileKms::new(dir.path())).await;
        // The wrapped key and its tombstone are all that is left on disk.
        let t = FileKms::new(dir.path()).tenant_dir(&tenant("a"));
        assert!(!t.join("n1.dek").exists());
        assert!(t.join("n1.erased").exists());
    }

    #[tokio::test]
    async fn a_missing_or_wrong_tenant_key_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let kms = FileKms::new(dir.path());
        let a = tenant("a");
        kms.data_key(&a, "n1", true).await.unwrap();
        let kek = kms.tenant_dir(&a).join("kek");
        let original = std::fs::read(&kek).unwrap();
        std::fs::write(&kek, [7u8; KEY_BYTES]).unwrap();
        assert!(matches!(
            kms.data_key(&a, "n1", false).await,
            Err(KmsError::Unwrap { .. })
        ));
        std::fs::write(&kek, [7u8; 5]).unwrap();
        assert!(matches!(
            kms.data_key(&a, "n1", false).await,
            Err(KmsError::Damaged { .. })
        ));
        std::fs::remove_file(&kek).unwrap();
        assert!(matches!(
            kms.data_key(&a, "n1", false).await,
            Err(KmsError::TenantKeyMissing { .. })
        ));
        std::fs::write(&kek, original).unwrap();
        // A wrapped key moved to another key id does not open.
        let t = kms.tenant_dir(&a);
        std::fs::copy(t.join("n1.dek"), t.join("n2.dek")).unwrap();
        assert!(matches!(
            kms.data_key(&a, "n2", false).await,
            Err(KmsError::Unwrap { .. })
        ));
        assert!(matches!(
            kms.data_key(&a, "n1", false).await,
            Ok(KeyLookup::Key(_))
        ));
    }
}
