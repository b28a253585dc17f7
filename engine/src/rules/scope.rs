//! What a condition is evaluated against: the case file and the plan's state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The lifecycle state of a plan item, as `docs/case-semantics.md` names them.
///
/// Conditions see it as a lower-case string: `state.attend == 'completed'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Created, waiting for an entry criterion.
    Available,
    /// Entered, waiting for a person to start it (manual activation).
    Enabled,
    /// In progress.
    Active,
    /// Suspended with its container, or by a person.
    Suspended,
    /// Finished normally (milestones: reached).
    Completed,
    /// Ended by an exit criterion or its container.
    Terminated,
    /// A service task whose invocation failed.
    Failed,
    /// A manual item someone chose not to do.
    Disabled,
}

impl ItemState {
    /// Every state, in lifecycle order.
    pub const ALL: [ItemState; 8] = [
        ItemState::Available,
        ItemState::Enabled,
        ItemState::Active,
        ItemState::Suspended,
        ItemState::Completed,
        ItemState::Terminated,
        ItemState::Failed,
        ItemState::Disabled,
    ];

    /// The name conditions compare against, e.g. `"completed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Available => "available",
            ItemState::Enabled => "enabled",
            ItemState::Active => "active",
            ItemState::Suspended => "suspended",
            ItemState::Completed => "completed",
            ItemState::Terminated => "terminated",
            ItemState::Failed => "failed",
            ItemState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plan as conditions see it: `state.<item>` and `reached`.
///
/// For a repeatable item the runtime should report its latest instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanState {
    /// The current state of each plan item that exists, by key.
    pub states: BTreeMap<String, ItemState>,
    /// The keys of the milestones reached at least once.
    pub reached: BTreeSet<String>,
}

/// Everything a condition is evaluated against.
///
/// ```
/// use casebook::rules::{Condition, Scope};
/// let case_file = serde_json::json!({ "grade": "immediate" });
/// let cond = Condition::compile("grade == 'immediate'").unwrap();
/// assert_eq!(cond.evaluate(&Scope::case_file(&case_file)), Ok(true));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The case file: a JSON object keyed by field key. A missing key or a
    /// `null` value is an absent field. Anything but an object is treated as
    /// an empty case file.
    pub case_file: &'a serde_json::Value,
    /// The plan's state, if the caller has one.
    pub plan: Option<&'a PlanState>,
}

impl<'a> Scope<'a> {
    /// A scope with a case file and no plan state (`state` and `reached` are
    /// empty).
    pub fn case_file(case_file: &'a serde_json::Value) -> Self {
        Scope {
            case_file,
            plan: None,
        }
    }

    /// The same scope, with the plan's state.
    pub fn with_plan(self, plan: &'a PlanState) -> Self {
        Scope {
            plan: Some(plan),
            ..self
        }
    }

    /// The value of a field, if present and not null.
    pub(crate) fn field(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.case_file.get(key).filter(|v| !v.is_null())
    }
}
