//! Reading a case: what a principal may see of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::definition::{CaseDefinition, FieldKey, ItemKey};
use crate::log::Timestamp;
use crate::rules::ItemState;
use crate::security::{Classification, Principal};

use super::disclose::Disclosure;
use super::error::{CaseError, ClearanceSubject};
use super::event::DefinitionRef;
use super::state::{
    CaseState, CaseStatus, EntityLink, InstanceId, Note, PlannedItem, RunningDeadline,
};

/// One plan item instance as a reader sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemView {
    /// The instance id.
    pub instance: InstanceId,
    /// The item's key.
    pub item: ItemKey,
    /// The enclosing stage instance.
    pub parent: Option<InstanceId>,
    /// Its state.
    pub state: ItemState,
    /// Whether a caseworker planned it.
    pub discretionary: bool,
    /// Who claimed or was assigned it.
    pub claimed_by: Option<String>,
    /// The team whose work queue it is in (human tasks).
    pub team: Option<String>,
}

/// A case as one principal may see it: fields, plan items, milestones,
/// deadlines and incidents above their clearance (an item's effective
/// marking: see [`CaseDefinition::markings`]) are left out entirely (not
/// masked), so their values and presence do not leak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseView {
    /// The case's status.
    pub status: CaseStatus,
    /// The definition it runs.
    pub definition: Option<DefinitionRef>,
    /// Its classification.
    pub classification: Classification,
    /// When it was opened.
    pub opened_at: Option<Timestamp>,
    /// The case-file fields the reader may see.
    pub case_file: BTreeMap<FieldKey, serde_json::Value>,
    /// Every plan item instance.
    pub items: Vec<ItemView>,
    /// Milestones reached.
    pub reached: BTreeSet<ItemKey>,
    /// Discretionary items waiting for their stage.
    pub planned: Vec<PlannedItem>,
    /// Linked entities.
    pub entities: Vec<EntityLink>,
    /// Notes.
    pub notes: Vec<Note>,
    /// Running deadlines.
    pub deadlines: Vec<RunningDeadline>,
    /// Open incidents: service invocations that failed for good.
    pub incidents: Vec<super::state::Incident>,
    /// Fields whose values were erased (crypto-shredding), each with its
    /// erasure certificate: they are absent from `case_file` and read as
    /// erased, not as never set. Filled by the engine's reads.
    pub erased: Vec<crate::records::ErasedField>,
}

impl CaseState {
    /// The case as `principal` may see it.
    ///
    /// # Errors
    /// [`CaseError::NotOpened`]; [`CaseError::WrongTenant`] for a principal
    /// of another tenant; [`CaseError::InsufficientClearance`] when the case's
    /// classification is above the principal's clearance.
    pub fn view_for(
        &self,
        def: &CaseDefinition,
        principal: &Principal,
    ) -> Result<CaseView, CaseError> {
        self.view_withholding(def, principal, &std::collections::BTreeSet::new())
    }

    /// [`CaseState::view_for`] with `withheld` fields left out whatever the
    /// clearance (a restricted subject's, see [`Disclosure::withholding`]).
    ///
    /// # Errors
    /// As [`CaseState::view_for`].
    pub fn view_withholding(
        &self,
        def: &CaseDefinition,
        principal: &Principal,
        withheld: &std::collections::BTreeSet<String>,
    ) -> Result<CaseView, CaseError> {
        if self.status == CaseStatus::NotOpened {
            return Err(CaseError::NotOpened);
        }
        if self.tenant.as_ref() != Some(&principal.tenant) {
            return Err(CaseError::WrongTenant {
                tenant: principal.tenant.clone(),
            });
        }
        if !principal.may_see(self.classification) {
            return Err(CaseError::InsufficientClearance {
                subject: ClearanceSubject::Case,
                needed: self.classification,
                held: principal.clearance,
            });
        }
        let see = Disclosure::new(def, self.classification, principal).withholding(withheld);
        let case_file = self
            .case_file
            .iter()
            .filter(|(k, _)| def.field(k.as_str()).is_some() && see.field(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(CaseView {
            status: self.status,
            definition: self.definition.clone(),
            classification: self.classification,
            opened_at: self.opened_at,
            case_file,
            items: self
                .items
                .iter()
                .filter(|i| see.item(i.key.as_str()))
                .map(|i| ItemView {
                    instance: i.id,
                    item: i.key.clone(),
                    parent: i.parent,
                    state: i.state,
                    discretionary: i.discretionary,
                    claimed_by: i.claimed_by.clone(),
                    team: i.team(def).map(str::to_string),
                })
                .collect(),
            reached: self
                .reached
                .iter()
                .filter(|k| see.item(k.as_str()))
                .cloned()
                .collect(),
            planned: self
                .planned
                .iter()
                .filter(|p| see.item(p.item.as_str()))
                .cloned()
                .collect(),
            entities: self.entities.iter().cloned().collect(),
            notes: self.notes.iter().cloned().collect(),
            deadlines: self
                .deadlines
                .iter()
                .filter(|d| see.deadline(d.deadline.as_str()))
                .cloned()
                .collect(),
            incidents: self
                .incidents
                .iter()
                .filter(|i| see.item(i.item.as_str()))
                .cloned()
                .collect(),
            erased: Vec::new(),
        })
    }
}
