//! Navigating the plan: every item with its parent and path, by key.

use super::keys::{FieldKey, ItemKey};
use super::model::{Activity, CaseDefinition, Deadline, FieldDef, Milestone, Sentry, Stage};

/// A borrowed plan item of any kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlanItem<'a> {
    /// A human task, service task or automatic step.
    Activity(&'a Activity),
    /// A stage.
    Stage(&'a Stage),
    /// A milestone.
    Milestone(&'a Milestone),
}

impl<'a> PlanItem<'a> {
    /// The item's key.
    pub fn key(&self) -> &'a ItemKey {
        match self {
            PlanItem::Activity(a) => &a.key,
            PlanItem::Stage(s) => &s.key,
            PlanItem::Milestone(m) => &m.key,
        }
    }

    /// The item's name.
    pub fn name(&self) -> &'a str {
        match self {
            PlanItem::Activity(a) => &a.name,
            PlanItem::Stage(s) => &s.name,
            PlanItem::Milestone(m) => &m.name,
        }
    }

    /// `activity`, `stage` or `milestone`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            PlanItem::Activity(_) => "activity",
            PlanItem::Stage(_) => "stage",
            PlanItem::Milestone(_) => "milestone",
        }
    }

    /// Entry criteria.
    pub fn entry(&self) -> &'a [Sentry] {
        match self {
            PlanItem::Activity(a) => &a.entry,
            PlanItem::Stage(s) => &s.entry,
            PlanItem::Milestone(m) => &m.entry,
        }
    }

    /// Exit criteria.
    pub fn exit(&self) -> &'a [Sentry] {
        match self {
            PlanItem::Activity(a) => &a.exit,
            PlanItem::Stage(s) => &s.exit,
            PlanItem::Milestone(m) => &m.exit,
        }
    }

    /// Deadlines (milestones have none).
    pub fn deadlines(&self) -> &'a [Deadline] {
        match self {
            PlanItem::Activity(a) => &a.deadlines,
            PlanItem::Stage(s) => &s.deadlines,
            PlanItem::Milestone(_) => &[],
        }
    }

    /// The required rule.
    pub fn required(&self) -> bool {
        match self {
            PlanItem::Activity(a) => a.required,
            PlanItem::Stage(s) => s.required,
            PlanItem::Milestone(m) => m.required,
        }
    }

    /// The repetition rule.
    pub fn repeatable(&self) -> bool {
        match self {
            PlanItem::Activity(a) => a.repeatable,
            PlanItem::Stage(s) => s.repeatable,
            PlanItem::Milestone(m) => m.repeatable,
        }
    }

    /// The manual activation rule (milestones: never).
    pub fn manual_activation(&self) -> bool {
        match self {
            PlanItem::Activity(a) => a.manual_activation,
            PlanItem::Stage(s) => s.manual_activation,
            PlanItem::Milestone(_) => false,
        }
    }

    /// Whether the item is discretionary (milestones: never).
    pub fn discretionary(&self) -> bool {
        match self {
            PlanItem::Activity(a) => a.discretionary,
            PlanItem::Stage(s) => s.discretionary,
            PlanItem::Milestone(_) => false,
        }
    }
}

/// A plan item with where it sits.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEntry<'a> {
    /// The item.
    pub item: PlanItem<'a>,
    /// The enclosing stage; `None` for items directly in the case plan.
    pub parent: Option<&'a ItemKey>,
    /// Its path in the document, e.g. `stages[1].activities[0]`.
    pub path: String,
}

impl CaseDefinition {
    /// Every plan item, depth first in document order (a stage before its
    /// children; within a container: activities, stages, milestones).
    pub fn plan_items(&self) -> Vec<PlanEntry<'_>> {
        let mut out = Vec::new();
        collect(
            &self.activities,
            &self.stages,
            &self.milestones,
            None,
            "",
            &mut out,
        );
        out
    }

    /// The plan item with this key.
    pub fn item(&self, key: &str) -> Option<PlanEntry<'_>> {
        self.plan_items().into_iter().find(|e| e.item.key() == key)
    }

    /// The direct children of a stage (`None`: of the case plan).
    pub fn children(&self, parent: Option<&str>) -> Vec<PlanEntry<'_>> {
        self.plan_items()
            .into_iter()
            .filter(|e| e.parent.map(ItemKey::as_str) == parent)
            .collect()
    }

    /// The case-file field with this key.
    pub fn field(&self, key: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.key == key)
    }

    /// Whether a case-file field with this key exists.
    pub fn has_field(&self, key: &FieldKey) -> bool {
        self.field(key.as_str()).is_some()
    }
}

fn collect<'a>(
    activities: &'a [Activity],
    stages: &'a [Stage],
    milestones: &'a [Milestone],
    parent: Option<&'a ItemKey>,
    prefix: &str,
    out: &mut Vec<PlanEntry<'a>>,
) {
    for (i, a) in activities.iter().enumerate() {
        out.push(PlanEntry {
            item: PlanItem::Activity(a),
            parent,
            path: format!("{prefix}activities[{i}]"),
        });
    }
    for (i, s) in stages.iter().enumerate() {
        let path = format!("{prefix}stages[{i}]");
        out.push(PlanEntry {
            item: PlanItem::Stage(s),
            parent,
            path: path.clone(),
        });
        collect(
            &s.activities,
            &s.stages,
            &s.milestones,
            Some(&s.key),
            &format!("{path}."),
            out,
        );
    }
    for (i, m) in milestones.iter().enumerate() {
        out.push(PlanEntry {
            item: PlanItem::Milestone(m),
            parent,
            path: format!("{prefix}milestones[{i}]"),
        });
    }
}
