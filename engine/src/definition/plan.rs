//! Navigating the plan: every item with its parent and path, by key.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::keys::{FieldKey, ItemKey};
use super::model::{Activity, CaseDefinition, Deadline, FieldDef, Milestone, Sentry, Stage};
use crate::rules::Condition;

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

    /// The repetition rule's condition (`repeat_while`), if any.
    pub fn repeat_while(&self) -> Option<&'a Condition> {
        match self {
            PlanItem::Activity(a) => a.repeat_while.as_ref(),
            PlanItem::Stage(s) => s.repeat_while.as_ref(),
            PlanItem::Milestone(m) => m.repeat_while.as_ref(),
        }
    }

    /// The most instances one stage instance may hold (`max_instances`).
    pub fn max_instances(&self) -> Option<u32> {
        match self {
            PlanItem::Activity(a) => a.max_instances,
            PlanItem::Stage(s) => s.max_instances,
            PlanItem::Milestone(m) => m.max_instances,
        }
    }

    /// The most instances entered at once (`max_concurrent`).
    pub fn max_concurrent(&self) -> Option<u32> {
        match self {
            PlanItem::Activity(a) => a.max_concurrent,
            PlanItem::Stage(s) => s.max_concurrent,
            PlanItem::Milestone(m) => m.max_concurrent,
        }
    }

    /// The required rule's condition (`required_if`), if any.
    pub fn required_if(&self) -> Option<&'a Condition> {
        match self {
            PlanItem::Activity(a) => a.required_if.as_ref(),
            PlanItem::Stage(s) => s.required_if.as_ref(),
            PlanItem::Milestone(m) => m.required_if.as_ref(),
        }
    }

    /// The manual activation rule's condition (`manual_activation_if`).
    pub fn manual_activation_if(&self) -> Option<&'a Condition> {
        match self {
            PlanItem::Activity(a) => a.manual_activation_if.as_ref(),
            PlanItem::Stage(s) => s.manual_activation_if.as_ref(),
            PlanItem::Milestone(_) => None,
        }
    }

    /// The applicability rule of a discretionary item, if any.
    pub fn applicability(&self) -> Option<&'a Condition> {
        match self {
            PlanItem::Activity(a) => a.applicability.as_ref(),
            PlanItem::Stage(s) => s.applicability.as_ref(),
            PlanItem::Milestone(_) => None,
        }
    }

    /// The item's own rules besides its sentries: repetition, required,
    /// manual activation and applicability conditions.
    pub fn rules(&self) -> impl Iterator<Item = &'a Condition> {
        [
            self.repeat_while(),
            self.required_if(),
            self.manual_activation_if(),
            self.applicability(),
        ]
        .into_iter()
        .flatten()
    }

    /// The marking its author gave it, if any.
    pub fn classification(&self) -> Option<crate::security::Classification> {
        match self {
            PlanItem::Activity(a) => a.classification,
            PlanItem::Stage(s) => s.classification,
            PlanItem::Milestone(m) => m.classification,
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
        self.walk(&mut |item, parent, trail| {
            out.push(PlanEntry {
                item,
                parent,
                path: path_of(trail),
            });
            true
        });
        out
    }

    /// The plan item with this key and its enclosing stage, found through
    /// the definition's index (built on first use): O(depth), where
    /// [`CaseDefinition::item`] walks the plan.
    pub fn plan_item(&self, key: &str) -> Option<(PlanItem<'_>, Option<&ItemKey>)> {
        let trail = self.plan_index().trails.get(key)?;
        let (mut activities, mut stages, mut milestones) =
            (&self.activities[..], &self.stages[..], &self.milestones[..]);
        let mut parent = None;
        for (n, (container, i)) in trail.iter().enumerate() {
            let last = n + 1 == trail.len();
            match *container {
                "activities" if last => {
                    return Some((PlanItem::Activity(activities.get(*i)?), parent))
                }
                "milestones" if last => {
                    return Some((PlanItem::Milestone(milestones.get(*i)?), parent))
                }
                "stages" => {
                    let s = stages.get(*i)?;
                    if last {
                        return Some((PlanItem::Stage(s), parent));
                    }
                    parent = Some(&s.key);
                    (activities, stages, milestones) = (&s.activities, &s.stages, &s.milestones);
                }
                _ => return None,
            }
        }
        None
    }

    /// How many plan item instances opening a case creates at least: the
    /// case plan's items that are not discretionary, and the children of
    /// each such stage that starts at once (no entry criteria, no manual
    /// activation). Each is at least one event of the opening's one append.
    pub fn items_created_on_open(&self) -> usize {
        fn count(activities: &[Activity], stages: &[Stage], milestones: &[Milestone]) -> usize {
            let mut n = activities.iter().filter(|a| !a.discretionary).count() + milestones.len();
            for s in stages.iter().filter(|s| !s.discretionary) {
                n += 1;
                if s.entry.is_empty() && !s.manual_activation {
                    n += count(&s.activities, &s.stages, &s.milestones);
                }
            }
            n
        }
        count(&self.activities, &self.stages, &self.milestones)
    }

    /// The plan item with this key.
    pub fn item(&self, key: &str) -> Option<PlanEntry<'_>> {
        let (item, parent) = self.plan_item(key)?;
        let trail = self.plan_index().trails.get(key)?;
        Some(PlanEntry {
            item,
            parent,
            path: path_of(trail),
        })
    }

    fn plan_index(&self) -> &PlanIndex {
        self.plan_index
            .0
            .get_or_init(|| Arc::new(PlanIndex::build(self)))
    }

    /// The direct children of a stage (`None`: of the case plan), without
    /// their paths: activities, then stages, then milestones, as
    /// [`CaseDefinition::children`] lists them. Empty for an unknown key or
    /// an item that is not a stage.
    pub fn child_items(&self, parent: Option<&str>) -> Vec<PlanItem<'_>> {
        let (activities, stages, milestones) = match parent {
            None => (&self.activities, &self.stages, &self.milestones),
            Some(key) => match self.plan_item(key) {
                Some((PlanItem::Stage(s), _)) => (&s.activities, &s.stages, &s.milestones),
                _ => return Vec::new(),
            },
        };
        let mut out = Vec::with_capacity(activities.len() + stages.len() + milestones.len());
        out.extend(activities.iter().map(PlanItem::Activity));
        out.extend(stages.iter().map(PlanItem::Stage));
        out.extend(milestones.iter().map(PlanItem::Milestone));
        out
    }

    /// The direct children of a stage (`None`: of the case plan).
    pub fn children(&self, parent: Option<&str>) -> Vec<PlanEntry<'_>> {
        let mut out = Vec::new();
        self.walk(&mut |item, p, trail| {
            if p.map(ItemKey::as_str) == parent {
                out.push(PlanEntry {
                    item,
                    parent: p,
                    path: path_of(trail),
                });
            }
            true
        });
        out
    }

    /// Calls `visit` with every plan item and its parent stage, in
    /// [`CaseDefinition::plan_items`] order, without spelling out paths.
    pub fn each_plan_item<'a>(&'a self, mut visit: impl FnMut(PlanItem<'a>, Option<&'a ItemKey>)) {
        self.walk(&mut |item, parent, _| {
            visit(item, parent);
            true
        });
    }

    /// Visits every plan item in [`CaseDefinition::plan_items`] order with
    /// its parent and its path as (container, index) steps, until `visit`
    /// returns false. Paths are only spelled out for the items asked for.
    fn walk<'a>(&'a self, visit: &mut Visit<'a, '_>) {
        walk(
            &self.activities,
            &self.stages,
            &self.milestones,
            None,
            &mut Vec::new(),
            visit,
        );
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

/// Each plan item's path by key (see [`CaseDefinition::plan_item`]).
#[derive(Debug, Default)]
struct PlanIndex {
    trails: HashMap<String, Vec<(&'static str, usize)>>,
}

impl PlanIndex {
    fn build(def: &CaseDefinition) -> PlanIndex {
        let mut trails = HashMap::new();
        def.walk(&mut |item, _, trail| {
            // Keys are unique (validated); the first wins otherwise, as in `item`.
            trails
                .entry(item.key().as_str().to_string())
                .or_insert_with(|| trail.to_vec());
            true
        });
        PlanIndex { trails }
    }
}

/// Where a definition keeps its plan index once built. A clone starts
/// empty (a changed copy must not use the original's index); it takes no
/// part in equality.
#[derive(Debug, Default)]
pub(crate) struct PlanIndexCache(OnceLock<Arc<PlanIndex>>);

impl Clone for PlanIndexCache {
    fn clone(&self) -> Self {
        PlanIndexCache::default()
    }
}

impl PartialEq for PlanIndexCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What [`CaseDefinition::walk`] calls for each item: the item, its parent
/// stage and its path; false stops the walk.
type Visit<'a, 'v> =
    dyn FnMut(PlanItem<'a>, Option<&'a ItemKey>, &[(&'static str, usize)]) -> bool + 'v;

/// A path's steps as text, e.g. `stages[1].activities[0]`.
fn path_of(trail: &[(&'static str, usize)]) -> String {
    let mut out = String::new();
    for (i, (container, index)) in trail.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(container);
        out.push('[');
        out.push_str(&index.to_string());
        out.push(']');
    }
    out
}

/// Walks one container; returns false once `visit` has stopped the walk.
fn walk<'a>(
    activities: &'a [Activity],
    stages: &'a [Stage],
    milestones: &'a [Milestone],
    parent: Option<&'a ItemKey>,
    trail: &mut Vec<(&'static str, usize)>,
    visit: &mut Visit<'a, '_>,
) -> bool {
    for (i, a) in activities.iter().enumerate() {
        trail.push(("activities", i));
        let go_on = visit(PlanItem::Activity(a), parent, trail);
        trail.pop();
        if !go_on {
            return false;
        }
    }
    for (i, s) in stages.iter().enumerate() {
        trail.push(("stages", i));
        let go_on = visit(PlanItem::Stage(s), parent, trail)
            && walk(
                &s.activities,
                &s.stages,
                &s.milestones,
                Some(&s.key),
                trail,
                visit,
            );
        trail.pop();
        if !go_on {
            return false;
        }
    }
    for (i, m) in milestones.iter().enumerate() {
        trail.push(("milestones", i));
        let go_on = visit(PlanItem::Milestone(m), parent, trail);
        trail.pop();
        if !go_on {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Format;

    #[test]
    fn lookups_agree_with_the_full_walk() {
        for source in [
            include_str!("../../../examples/definitions/burglary.toml"),
            include_str!("../../../examples/definitions/missing-person.toml"),
            include_str!("../../../examples/definitions/domestic-abuse.toml"),
        ] {
            let def = CaseDefinition::parse(source, Format::Toml).unwrap();
            let all = def.plan_items();
            assert!(all.iter().any(|e| e.path.contains('.')), "nested items");
            for e in &all {
                assert_eq!(def.item(e.item.key().as_str()).as_ref(), Some(e));
                let parent = e.parent.map(ItemKey::as_str);
                assert!(def.children(parent).contains(e));
            }
            let top: Vec<_> = all.iter().filter(|e| e.parent.is_none()).cloned().collect();
            assert_eq!(def.children(None), top);
            assert!(def.item("no-such-item").is_none());
            assert!(all[0].path.ends_with("[0]") && !all[0].path.contains('.'));
        }
    }
}
