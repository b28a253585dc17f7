//! Position tokens: what a tenant sees instead of the log's global positions.
//!
//! The log numbers every event of every tenant in one sequence
//! ([`GlobalPosition`]). Shown to a tenant, two such numbers would tell how
//! many events the other tenants wrote in between. So every position a
//! tenant-scoped caller receives from the engine is a [`PositionToken`]
//! instead, and every position it passes in is one, decoded by the engine.
//!
//! **The cipher.** A token is the position encrypted under a key of the
//! tenant's own: the 64-bit block `(position + 1) << 16 | CHECK` (positions
//! below 2^48 − 1, the sixteen low bits a fixed check value) through a
//! Feistel network of [`ROUNDS`] rounds over two 32-bit halves, whose round
//! function is HMAC-SHA-256 under the tenant's key. The tenant's key is
//! HMAC-SHA-256 of the engine's secret ([`PositionKey`]) and the tenant id.
//! A Feistel network is a permutation, so tokens are distinct and decode
//! exactly; keyed by a pseudorandom function, consecutive positions give
//! unrelated tokens, so a tenant's tokens are neither ordered nor spaced by
//! what other tenants wrote. Decoding a token that was not made for the
//! tenant (another tenant's, a forged one) gives a random block whose check
//! bits match with probability 2^-16; everything else is refused with
//! [`AccessError::NotAPositionToken`], never mapped to some other
//! position. The token 0 ([`PositionToken::NONE`]) is never produced for
//! a position (one position in 2^64 would encrypt to it: it is refused as
//! out of range rather than confused with "none") and means "none" or
//! "from the start" where a position is optional.
//!
//! **The secret.** 32 random bytes, made once: a durable engine keeps it
//! in `<data>/position.key` (owner read/write only), so tokens stay valid
//! across restarts; an in-memory engine makes a new one per process.
//!
//! Tokens are opaque: compare them for equality only. To wait for the
//! latest of several writes, keep the token of the last one made.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::AccessError;
use crate::log::{GlobalPosition, TenantId};

/// Feistel rounds (4 suffice for a pseudorandom permutation with a
/// pseudorandom round function; 8 leave a margin for 32-bit halves).
pub const ROUNDS: u8 = 8;

/// The value of a valid token's sixteen low plaintext bits.
const CHECK: u64 = 0xCA5E;

/// Positions from here on cannot be carried (the shifted `position + 1`
/// must fit in 48 bits).
const LIMIT: u64 = (1 << 48) - 1;

/// A position as a tenant sees it: opaque, valid for that tenant only.
/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PositionToken(u64);

impl PositionToken {
    /// No position: "none" or "from the start", where a position is optional.
    pub const NONE: PositionToken = PositionToken(0);

    /// A token as carried by a client (e.g. a protobuf `uint64`).
    pub const fn from_u64(value: u64) -> Self {
        PositionToken(value)
    }

    /// The token's value, to hand to a client.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether this is [`PositionToken::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for PositionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// HMAC-SHA-256 keyed once; each MAC starts from a clone of the keyed
/// state (the padded key blocks are hashed only at construction).
#[derive(Clone)]
struct Keyed(Hmac<Sha256>);

impl Keyed {
    fn new(key: &[u8]) -> Self {
        Keyed(
            <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length")),
        )
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The engine's secret, from which every tenant's token key is derived.
#[derive(Clone)]
pub struct PositionKey([u8; 32]);

impl fmt::Debug for PositionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PositionKey(..)")
    }
}

/// The file name of the secret in a durable engine's data directory.
pub const KEY_FILE: &str = "position.key";

impl PositionKey {
    /// A new random secret (from the operating system's generator).
    ///
    /// Errors: the generator failed.
    pub fn random() -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        Ok(PositionKey(key))
    }

    /// A secret from its bytes (e.g. a test's fixed key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PositionKey(bytes)
    }

    /// The secret in `dir`/[`KEY_FILE`], made (random, readable by the
    /// owner only, synced) if absent.
    ///
    /// Errors: the file cannot be read or written, or is not 32 bytes
    /// (`InvalidData`: a damaged key would silently invalidate every
    /// token, so it is refused rather than replaced).
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} holds {} bytes, not 32; restore it from a backup \
                             (tokens given out were made with it)",
                            path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                return Ok(PositionKey(key));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = PositionKey::random()?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&key.0)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(key)
    }

    /// The key `tenant`'s subject ids are derived with
    /// ([`crate::records::SubjectIds`]): a keyed hash, so an id says
    /// nothing about the person it stands for.
    pub(crate) fn subject_key(&self, tenant: &TenantId) -> [u8; 32] {
        Keyed::new(&self.0).mac(&[b"casebook subject id v1\0", tenant.as_str().as_bytes()])
    }

    /// The token codec of `tenant`.
    pub fn tenant(&self, tenant: &TenantId) -> TenantPositions {
        let key =
            Keyed::new(&self.0).mac(&[b"casebook position token v1\0", tenant.as_str().as_bytes()]);
        TenantPositions {
            round: Keyed::new(&key),
        }
    }
}

/// One tenant's token codec ([`PositionKey::tenant`]).
#[derive(Clone)]
pub struct TenantPositions {
    round: Keyed,
}

impl fmt::Debug for TenantPositions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantPositions(..)")
    }
}

impl TenantPositions {
    fn f(&self, round: u8, half: u32) -> u32 {
        let mac = self.round.mac(&[&[round], &half.to_be_bytes()]);
        u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]])
    }

    fn encrypt(&self, block: u64) -> u64 {
        let (mut l, mut r) = ((block >> 32) as u32, block as u32);
        for i in 0..ROUNDS {
            (l, r) = (r, l ^ self.f(i, r));
        }
        (u64::from(l) << 32) | u64::from(r)
    }

    fn decrypt(&self, block: u64) -> u64 {
        let (mut l, mut r) = ((block >> 32) as u32, block as u32);
        for i in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.f(i, l), l);
        }
        (u64::from(l) << 32) | u64::from(r)
    }

    /// The tenant's token for `position`.
    ///
    /// Errors: [`AccessError::PositionOutOfRange`] from 2^48 − 1 on (and
    /// for the one position in 2^64 whose token would be 0).
    pub fn encode(&self, position: GlobalPosition) -> Result<PositionToken, AccessError> {
        let out_of_range = AccessError::PositionOutOfRange {
            position: position.0,
        };
        if position.0 >= LIMIT {
            return Err(out_of_range);
        }
        match self.encrypt(((position.0 + 1) << 16) | CHECK) {
            0 => Err(out_of_range),
            token => Ok(PositionToken(token)),
        }
    }

    /// [`TenantPositions::encode`] of an optional position (`None` is
    /// [`PositionToken::NONE`]).
    ///
    /// Errors: as [`TenantPositions::encode`].
    pub fn encode_opt(
        &self,
        position: Option<GlobalPosition>,
    ) -> Result<PositionToken, AccessError> {
        position.map_or(Ok(PositionToken::NONE), |p| self.encode(p))
    }

    /// The position a token of this tenant stands for.
    ///
    /// Errors: [`AccessError::NotAPositionToken`] (naming `field`) for
    /// [`PositionToken::NONE`], another tenant's token or a made-up one.
    pub fn decode(&self, token: PositionToken, field: &str) -> Result<GlobalPosition, AccessError> {
        let refused = || AccessError::NotAPositionToken {
            field: field.to_string(),
            token: token.0,
        };
        if token.is_none() {
            return Err(refused());
        }
        let block = self.decrypt(token.0);
        let shifted = block >> 16;
        if block & 0xFFFF != CHECK || shifted == 0 {
            return Err(refused());
        }
        Ok(GlobalPosition(shifted - 1))
    }

    /// [`TenantPositions::decode`], with [`PositionToken::NONE`] as `None`.
    ///
    /// Errors: as [`TenantPositions::decode`] for any other token.
    pub fn decode_opt(
        &self,
        token: PositionToken,
        field: &str,
    ) -> Result<Option<GlobalPosition>, AccessError> {
        if token.is_none() {
            return Ok(None);
        }
        self.decode(token, field).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(tenant: &str) -> TenantPositions {
        PositionKey::from_bytes([7; 32]).tenant(&TenantId::new(tenant).unwrap())
    }

    #[test]
    fn the_mac_is_hmac_sha256() {
        // RFC 4231, test case 2.
        let mac = Keyed::new(b"Jefe").mac(&[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_round_trip_and_are_unordered() {
        let kent = codec("kent");
        let mut increasing = 0;
        let mut previous = None;
        for p in (0..2_000u64).chain([LIMIT - 1, 1 << 40]) {
            let token = kent.encode(GlobalPosition(p)).unwrap();
            assert!(!token.is_none());
            assert_eq!(kent.decode(token, "position").unwrap(), GlobalPosition(p));
            if let Some(prev) = previous {
                increasing += u32::from(token.get() > prev);
            }
            previous = Some(token.get());
        }
        // Order is not kept: about half the steps go down.
        assert!((700..1_300).contains(&increasing), "{increasing}");
        assert!(kent.encode(GlobalPosition(LIMIT)).is_err());
        assert!(kent.encode(GlobalPosition(u64::MAX)).is_err());
    }

    #[test]
    fn another_tenants_and_made_up_tokens_are_refused() {
        let (kent, essex) = (codec("kent"), codec("essex"));
        let mut accepted = 0;
        for p in 0..5_000u64 {
            let token = kent.encode(GlobalPosition(p)).unwrap();
            assert_ne!(token, essex.encode(GlobalPosition(p)).unwrap());
            accepted += u32::from(essex.decode(token, "position").is_ok());
            accepted += u32::from(kent.decode(PositionToken(p + 1), "position").is_ok());
        }
        // A false accept has probability 2^-16 per try.
        assert!(accepted <= 2, "{accepted}");
        let err = kent
            .decode(PositionToken::NONE, "min_position")
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::invalid("min_position"));
        assert!(err
            .to_string()
            .contains("not a position token of this tenant"));
        assert_eq!(kent.decode_opt(PositionToken::NONE, "p").unwrap(), None);
    }

    #[test]
    fn another_secret_gives_other_tokens() {
        let kent = TenantId::new("kent").unwrap();
        let a = PositionKey::from_bytes([1; 32]).tenant(&kent);
        let b = PositionKey::from_bytes([2; 32]).tenant(&kent);
        let token = a.encode(GlobalPosition(42)).unwrap();
        assert_ne!(token, b.encode(GlobalPosition(42)).unwrap());
    }

    #[test]
    fn the_key_file_is_made_once_private_and_refused_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let kent = TenantId::new("kent").unwrap();
        let first = PositionKey::load_or_create(dir.path()).unwrap();
        let again = PositionKey::load_or_create(dir.path()).unwrap();
        let p = GlobalPosition(9);
        assert_eq!(
            first.tenant(&kent).encode(p).unwrap(),
            again.tenant(&kent).encode(p).unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let err = PositionKey::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
