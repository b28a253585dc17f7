//! Erasure by crypto-shredding (issue 22 item 5, DPA 2018 s47(1)):
//! [`Engine::erase_subject`].
//!
//! A subject's personal fields reach the log only sealed under its data
//! key ([`super::sealing`]), so destroying the key erases them from the log
//! and from every copy of it. What the engine derived from them in the
//! clear — views, the search index, the timeline, the `nominals` record,
//! case snapshots and cached states — is purged: the state cache emptied,
//! the snapshot and projection databases replaced by fresh ones rebuilt from
//! the log (which now reads the fields as erased) and the old folders
//! deleted, since sled never overwrites a dropped key's bytes in place. A
//! `SubjectErased` event in the subject's governance stream is the erasure
//! certificate (DPA 2018 s62: who, under which basis, which keys, which
//! cases, when — no personal data); its event id is the reference an
//! erased field reads with.
//!
//! Order, so that nothing is half-done: every check first (role, subject
//! known and visible, no hold, not erased already); then the certificate
//! is appended (at the governance stream's version read: a concurrent
//! decision makes it [`RecordsError::WrongVersion`] with nothing done);
//! then the key is destroyed (its tombstone names the certificate), then
//! the derived stores are purged. If the process dies after the
//! certificate, erasing the subject again finishes the job (the key
//! destroyed and stores purged under the first certificate) instead of
//! answering [`RecordsError::AlreadyErased`].

use super::engine::require_role;
use super::error::RecordsError;
use super::events::{ErasureBasis, GovernanceEvent};
use super::kms::KeyLookup;
use super::{SubjectId, SubjectState, RECORDS_ROLE};
use crate::engine::{Engine, EngineError};
use crate::log::{EventId, TenantId};
use crate::security::Principal;

/// An erasure to carry out ([`Engine::erase_subject`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseSubject {
    /// The subject.
    pub subject: SubjectId,
    /// The legal basis.
    pub basis: ErasureBasis,
    /// The disposal review it carries out (that review's event id), if any.
    pub review: Option<String>,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureCertificate {
    /// The subject.
    pub subject: SubjectId,
    /// The certificate's reference: the `SubjectErased` event's id.
    pub certificate: String,
    /// The data keys destroyed.
    pub key_ids: Vec<String>,
    /// The cases the subject appeared in.
    pub cases: Vec<String>,
}

impl Engine {
    /// Erases a subject by destroying its data key, purging every derived
    /// copy of its data and recording an erasure certificate (see the
    /// module docs). Needs the `records_officer` role and the engine
    /// started. Returns once the key is destroyed and the derived stores
    /// replaced; views are rebuilt from the log in the background (reads
    /// wait for them, or answer `Rebuilding`).
    ///
    /// Errors: [`RecordsError::Forbidden`]; [`RecordsError::Invalid`] for a
    /// review id that is not an event id; [`RecordsError::UnknownSubject`]
    /// (also for one above the caller's clearance or of another tenant);
    /// [`RecordsError::ErasureUnderHold`] (restrict instead);
    /// [`RecordsError::AlreadyErased`]; [`RecordsError::WrongVersion`] if
    /// the subject changed meanwhile; key-store ([`EngineError::Seal`]),
    /// projection and store errors.
    pub async fn erase_subject(
        &self,
        principal: &Principal,
        erase: EraseSubject,
    ) -> Result<ErasureCertificate, RecordsError> {
        self.admit(principal).await?;
        require_role(principal, "erase subjects")?;
        if let Some(review) = &erase.review {
            if uuid::Uuid::parse_str(review).is_err() {
                return Err(RecordsError::invalid(
                    "review",
                    "must be the id of the disposal review's event",
                ));
            }
        }
        let tenant = principal.tenant.clone();
        let gen = self.nominals(&tenant).await?;
        let subject = self.visible_subject(principal, &gen.rows, erase.subject.as_str())?;
        let key_ids = vec![subject.id.clone()];
        let cases: Vec<String> = subject.row.appearances.keys().cloned().collect();
        if subject.row.state == SubjectState::Erased {
            let certificate = subject.row.certificate.clone().unwrap_or_default();
            let lookup = self
                .inner_sealer()
                .kms()
                .data_key(&tenant, &subject.id, false)
                .await
                .map_err(|e| EngineError::Seal(e.into()))?;
            if matches!(lookup, KeyLookup::Destroyed { .. }) {
                return Err(RecordsError::AlreadyErased {
                    subject: subject.id.clone(),
                    certificate,
                });
            }
            // The certificate is recorded but the key outlived a crash.
            self.shred(&tenant, &key_ids, &certificate).await?;
            return Ok(ErasureCertificate {
                subject: erase.subject,
                certificate,
                key_ids,
                cases,
            });
        }
        let holds = subject.holds();
        if !holds.is_empty() {
            return Err(RecordsError::ErasureUnderHold {
                subject: subject.id.clone(),
                holds: holds
                    .iter()
                    .map(|h| format!("{} {}", h.kind.as_str(), h.id))
                    .collect(),
            });
        }
        let id = EventId::new();
        let event = GovernanceEvent::SubjectErased {
            erased_by: principal.subject.clone(),
            role: RECORDS_ROLE.to_string(),
            basis: erase.basis,
            review: erase.review.clone(),
            key_ids: key_ids.clone(),
            cases: cases.clone(),
            day: crate::streams::day_of(self.now()),
        };
        let reason = format!("erasure: {}", erase.basis.as_str());
        self.append_governance(principal, &subject, id, event, &reason)
            .await?;
        let certificate = id.to_string();
        self.shred(&tenant, &key_ids, &certificate).await?;
        tracing::info!(
            target: "casebook::records",
            tenant = %tenant,
            subject = %subject.id,
            certificate = %certificate,
            erased_by = %principal.subject,
            basis = erase.basis.as_str(),
            cases = cases.len(),
            "subject erased: data key destroyed, derived stores purged"
        );
        Ok(ErasureCertificate {
            subject: erase.subject,
            certificate,
            key_ids,
            cases,
        })
    }

    /// Destroys `key_ids` (tombstones naming `certificate`) and purges the
    /// derived stores.
    async fn shred(
        &self,
        tenant: &TenantId,
        key_ids: &[String],
        certificate: &str,
    ) -> Result<(), RecordsError> {
        let sealer = self.inner_sealer();
        for key_id in key_ids {
            sealer
                .kms()
                .destroy(tenant, key_id, certificate)
                .await
                .map_err(|e| EngineError::Seal(e.into()))?;
            sealer.forget(tenant, key_id);
        }
        self.purge_derived(format!("erasure {certificate}")).await?;
        Ok(())
    }
}
