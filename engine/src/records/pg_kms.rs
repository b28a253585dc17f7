//! [`PgKms`]: the data keys of crypto-shredding on the shared PostgreSQL database, for N nodes.
//!
//! Every node of a PostgreSQL deployment must open what any other node
//! sealed, so the keys live beside the events: each tenant's key in
//! `cb_kms_tenant_keys`, its subjects' data keys wrapped under it in
//! `cb_kms_data_keys` (the same wrapping as [`super::kms::FileKms`]).
//! Destroying a key sets its wrapped bytes to NULL and keeps the tombstone
//! naming the certificate. Two nodes making the same key at once keep the
//! first one stored: the insert does nothing if a row is there, and both
//! read back what is.
//!
//! The old row version holding a destroyed key stays in the table's pages
//! until VACUUM reclaims it (and in WAL archives and base backups): the
//! tenant key must not travel with those backups for the erasure to hold
//! against them, as `docs/postgres.md` says.

use async_trait::async_trait;

use super::kms::{check_key_id, unwrap, wrap, DataKey, KeyLookup, Kms, KmsError, KEY_BYTES};
use crate::log::pg::PgEventStore;
use crate::log::TenantId;

const TENANT_KEY: &str = "WITH made AS (
        INSERT INTO cb_kms_tenant_keys (tenant_id, kek) VALUES ($1, $2)
        ON CONFLICT (tenant_id) DO NOTHING RETURNING kek)
    SELECT kek FROM made UNION ALL
    SELECT kek FROM cb_kms_tenant_keys WHERE tenant_id = $1 LIMIT 1";

const DATA_KEY: &str =
    "SELECT wrapped, certificate FROM cb_kms_data_keys WHERE tenant_id = $1 AND key_id = $2";

const MAKE_DATA_KEY: &str = "INSERT INTO cb_kms_data_keys (tenant_id, key_id, wrapped)
    VALUES ($1, $2, $3) ON CONFLICT (tenant_id, key_id) DO NOTHING";

const DESTROY: &str = "INSERT INTO cb_kms_data_keys (tenant_id, key_id, wrapped, certificate)
    VALUES ($1, $2, NULL, $3)
    ON CONFLICT (tenant_id, key_id) DO UPDATE
    SET wrapped = NULL, certificate = coalesce(cb_kms_data_keys.certificate, EXCLUDED.certificate)";

/// The key store of a PostgreSQL deployment (see the module docs).
#[derive(Clone)]
pub struct PgKms {
    store: PgEventStore,
}

impl std::fmt::Debug for PgKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgKms(..)")
    }
}

impl PgKms {
    /// The key store in `store`'s database.
    pub fn new(store: PgEventStore) -> Self {
        PgKms { store }
    }

    async fn rows(
        &self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, KmsError> {
        self.store
            .query("using the key store", statement, params)
            .await
            .map_err(|e| KmsError::Io {
                path: "database".into(),
                detail: e.to_string(),
            })
    }

    async fn tenant_key(&self, tenant: &TenantId) -> Result<DataKey, KmsError> {
        let fresh = DataKey::random()?;
        for _ in 0..2 {
            // A node storing the tenant key at this moment commits after
            // this statement's snapshot: the second attempt sees it.
            let rows = self
                .rows(TENANT_KEY, &[&tenant.as_str(), &fresh.bytes()])
                .await?;
            if let Some(row) = rows.first() {
                let kek: &[u8] = row.get(0);
                return DataKey::from_slice(kek).ok_or_else(|| KmsError::Damaged {
                    path: format!("cb_kms_tenant_keys ({tenant})"),
                    detail: format!("{} bytes, not {KEY_BYTES}", kek.len()),
                });
            }
        }
        Err(KmsError::Io {
            path: "database".into(),
            detail: "the tenant key was neither stored nor found".into(),
        })
    }

    async fn lookup(&self, tenant: &TenantId, key_id: &str) -> Result<Option<KeyRow>, KmsError> {
        let rows = self.rows(DATA_KEY, &[&tenant.as_str(), &key_id]).await?;
        Ok(rows.first().map(|row| KeyRow {
            wrapped: row.get::<_, Option<Vec<u8>>>(0),
            certificate: row.get::<_, Option<String>>(1),
        }))
    }
}

struct KeyRow {
    wrapped: Option<Vec<u8>>,
    certificate: Option<String>,
}

#[async_trait]
impl Kms for PgKms {
    async fn data_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        create: bool,
    ) -> Result<KeyLookup, KmsError> {
        check_key_id(key_id)?;
        let mut row = self.lookup(tenant, key_id).await?;
        if row.is_none() && create {
            let kek = self.tenant_key(tenant).await?;
            let dek = DataKey::random()?;
            let wrapped = wrap(&kek, tenant, key_id, &dek)?;
            self.rows(MAKE_DATA_KEY, &[&tenant.as_str(), &key_id, &wrapped])
                .await?;
            // Another node may have stored its key first: use what is stored.
            row = self.lookup(tenant, key_id).await?;
        }
        match row {
            None => Ok(KeyLookup::Absent),
            Some(KeyRow {
                certificate: Some(certificate),
                ..
            }) => Ok(KeyLookup::Destroyed { certificate }),
            Some(KeyRow {
                wrapped: Some(wrapped),
                ..
            }) => {
                let kek = self.tenant_key(tenant).await?;
                Ok(KeyLookup::Key(unwrap(&kek, tenant, key_id, &wrapped)?))
            }
            Some(KeyRow { .. }) => Ok(KeyLookup::Absent),
        }
    }

    async fn destroy(
        &self,
        tenant: &TenantId,
        key_id: &str,
        certificate: &str,
    ) -> Result<(), KmsError> {
        check_key_id(key_id)?;
        self.rows(DESTROY, &[&tenant.as_str(), &key_id, &certificate])
            .await?;
        Ok(())
    }
}
