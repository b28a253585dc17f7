//! Derived markings: what each plan item, deadline and the case's status reveal.
//!
//! A field marked SECRET is withheld from a reader cleared only for
//! OFFICIAL, but that is not enough: a stage whose entry criterion is
//! `risk_level == 'high'` tells anyone who sees it active what the risk
//! level is. So every part of the plan gets an **effective marking**, the
//! highest marking of the information its state depends on:
//!
//! - the marking its author gave it (`classification` on an activity, stage
//!   or milestone — it can raise what the rules give, never lower it);
//! - the fields its entry and exit criteria, its applicability,
//!   repetition, required and manual activation rules, its service inputs and its automatic assignments read, and the fields whose
//!   change its sentries listen to;
//! - the effective marking of every item its sentries listen to (`completed`,
//!   `terminated`, `reached`, `state.x`, `'m' in reached`), of its enclosing
//!   stage (an item exists only while its stage is active), of every child of
//!   a stage (when it completes tells how its children ended), and of a
//!   deadline whose escalation starts it;
//! - for a deadline: its owner, its condition and what it is measured from
//!   and until.
//!
//! The rule is applied to a fixed point, so it holds transitively. A case's
//! marking still applies on top: a reader sees an item only when their
//! clearance covers both. The case's **status** (active, completed) is shown
//! to everyone who may see the case, so the validator refuses a definition
//! whose exit criteria read more than the case's default classification
//! (see `validate.rs`).
//!
//! Markings are derived data: computed once per definition on first use,
//! never stored or compared.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use super::model::{CaseDefinition, Deadline, Escalation, Occurrence, OnPart, Sentry};
use super::plan::PlanItem;
use crate::rules::PlanRefs;
use crate::security::Classification;

/// A node of the dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Item(String),
    Deadline(String),
    Status,
}

/// What one node's marking comes from, before the fixed point.
#[derive(Default)]
struct Sources {
    own: Classification,
    /// Why `own` is what it is (the first field or author marking that set it).
    why: Option<String>,
    deps: BTreeSet<Node>,
}

impl Sources {
    fn raise(&mut self, c: Classification, why: impl FnOnce() -> String) {
        if c > self.own {
            self.own = c;
            self.why = Some(why());
        }
    }
}

/// The effective markings of a definition's plan items, deadlines and
/// case status (see the module docs). The case's own classification is not
/// included: compare `max(case, marking)` with a reader's clearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Markings {
    items: BTreeMap<String, (Classification, String)>,
    deadlines: BTreeMap<String, (Classification, String)>,
    status: (Classification, String),
}

impl Markings {
    /// The effective marking of the plan item `key` (OFFICIAL when unknown).
    pub fn item(&self, key: &str) -> Classification {
        self.items
            .get(key)
            .map_or(Classification::Official, |m| m.0)
    }

    /// The effective marking of the deadline `key` (OFFICIAL when unknown).
    pub fn deadline(&self, key: &str) -> Classification {
        self.deadlines
            .get(key)
            .map_or(Classification::Official, |m| m.0)
    }

    /// What the case's status reveals.
    pub fn status(&self) -> Classification {
        self.status.0
    }

    /// Why the item is marked as it is, e.g. "reads field `risk_level`
    /// (SECRET)" or "follows `grade_risk`".
    pub fn item_reason(&self, key: &str) -> Option<&str> {
        self.items.get(key).map(|m| m.1.as_str())
    }

    /// Why the case's status is marked as it is.
    pub fn status_reason(&self) -> &str {
        &self.status.1
    }

    /// The highest marking of any item, deadline or the status.
    pub fn highest(&self) -> Classification {
        self.items
            .values()
            .chain(self.deadlines.values())
            .map(|m| m.0)
            .fold(self.status.0, Ord::max)
    }

    /// Computes the markings of `def`.
    pub fn compute(def: &CaseDefinition) -> Markings {
        let field = |k: &str| {
            def.field(k)
                .and_then(|f| f.classification)
                .unwrap_or_default()
        };
        let mut all_items = Vec::new();
        let mut milestones = Vec::new();
        def.each_plan_item(|item, _| {
            all_items.push(item.key().as_str().to_string());
            if matches!(item, PlanItem::Milestone(_)) {
                milestones.push(item.key().as_str().to_string());
            }
        });
        let plan_deps = |refs: PlanRefs, deps: &mut BTreeSet<Node>| {
            let items = if refs.any_item {
                all_items.clone()
            } else {
                refs.items.into_iter().collect()
            };
            let ms = if refs.any_milestone {
                milestones.clone()
            } else {
                refs.milestones.into_iter().collect()
            };
            deps.extend(items.into_iter().chain(ms).map(Node::Item));
        };
        let sentries = |list: &[Sentry], src: &mut Sources| {
            for s in list {
                for on in &s.on {
                    match on {
                        OnPart::Completed(k) | OnPart::Terminated(k) | OnPart::Reached(k) => {
                            src.deps.insert(Node::Item(k.as_str().to_string()));
                        }
                        OnPart::Changed(f) => {
                            src.raise(field(f.as_str()), || field_reason(f.as_str(), field));
                        }
                    }
                }
                if let Some(c) = &s.condition {
                    for f in c.fields() {
                        src.raise(field(f), || field_reason(f, field));
                    }
                    plan_deps(c.plan_refs(), &mut src.deps);
                }
            }
        };
        let mut graph: BTreeMap<Node, Sources> = BTreeMap::new();
        let mut deadline_owner: Vec<(&Deadline, Node)> = Vec::new();
        for d in &def.deadlines {
            deadline_owner.push((d, Node::Status));
        }
        def.each_plan_item(|item, parent| {
            let key = item.key().as_str().to_string();
            let mut src = Sources::default();
            if let Some(c) = item.classification() {
                src.raise(c, || format!("is marked {c}"));
            }
            sentries(item.entry(), &mut src);
            sentries(item.exit(), &mut src);
            if let Some(p) = parent {
                src.deps.insert(Node::Item(p.as_str().to_string()));
            }
            // Its own rules (repetition, required, manual activation,
            // applicability) decide its instances and states.
            for c in item.rules() {
                for f in c.fields().filter(|f| *f != super::model::REPETITION) {
                    src.raise(field(f), || field_reason(f, field));
                }
                plan_deps(c.plan_refs(), &mut src.deps);
            }
            match item {
                PlanItem::Activity(a) => {
                    for e in a.input.values().chain(a.set.values()) {
                        for f in e.fields() {
                            src.raise(field(f), || field_reason(f, field));
                        }
                        plan_deps(e.plan_refs(), &mut src.deps);
                    }
                }
                PlanItem::Stage(s) => {
                    // A stage completes when its children are done (all
                    // of them, or the required ones when it autocompletes):
                    // when it does tells how they ended.
                    for child in def.children(Some(s.key.as_str())) {
                        src.deps
                            .insert(Node::Item(child.item.key().as_str().to_string()));
                    }
                }
                PlanItem::Milestone(_) => {}
            }
            for d in item.deadlines() {
                deadline_owner.push((d, Node::Item(key.clone())));
            }
            graph.insert(Node::Item(key), src);
        });
        for (d, owner) in deadline_owner {
            let mut src = Sources::default();
            src.deps.insert(owner);
            if let Some(c) = &d.condition {
                for f in c.fields() {
                    src.raise(field(f), || field_reason(f, field));
                }
                plan_deps(c.plan_refs(), &mut src.deps);
            }
            for occ in d.from.iter().chain(d.until.iter()) {
                match occ {
                    Occurrence::CaseOpened => {}
                    Occurrence::CaseClosed => {
                        src.deps.insert(Node::Status);
                    }
                    Occurrence::Activated(k)
                    | Occurrence::Completed(k)
                    | Occurrence::Reached(k) => {
                        src.deps.insert(Node::Item(k.as_str().to_string()));
                    }
                    Occurrence::Changed(f) => {
                        src.raise(field(f.as_str()), || field_reason(f.as_str(), field));
                    }
                }
            }
            for e in &d.escalate {
                if let Escalation::Start(k) = e {
                    if let Some(target) = graph.get_mut(&Node::Item(k.as_str().to_string())) {
                        target
                            .deps
                            .insert(Node::Deadline(d.key.as_str().to_string()));
                    }
                }
            }
            graph.insert(Node::Deadline(d.key.as_str().to_string()), src);
        }
        // The case's exit criteria decide its status outright. (When the
        // case completes because its plan is done also tells, a little,
        // how hidden items ended: a channel of timing the validator does
        // not refuse; see docs/markings.md.)
        let mut status = Sources::default();
        sentries(&def.exit, &mut status);
        graph.insert(Node::Status, status);

        // The fixed point: a node is at least as marked as what it depends
        // on. Markings only rise and there are four, so this ends.
        let mut marks: BTreeMap<Node, (Classification, String)> = graph
            .iter()
            .map(|(n, s)| (n.clone(), (s.own, s.why.clone().unwrap_or_default())))
            .collect();
        loop {
            let mut changed = false;
            for (node, src) in &graph {
                for dep in &src.deps {
                    let Some(&(dep_mark, _)) = marks.get(dep) else {
                        continue;
                    };
                    if let Some(mine) = marks.get_mut(node) {
                        if dep_mark > mine.0 {
                            *mine = (dep_mark, follows(dep));
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut out = Markings::default();
        for (node, mark) in marks {
            match node {
                Node::Item(k) => {
                    out.items.insert(k, mark);
                }
                Node::Deadline(k) => {
                    out.deadlines.insert(k, mark);
                }
                Node::Status => out.status = mark,
            }
        }
        out
    }
}

fn field_reason(key: &str, field: impl Fn(&str) -> Classification) -> String {
    format!("reads field `{key}` ({})", field(key))
}

fn follows(node: &Node) -> String {
    match node {
        Node::Item(k) => format!("follows `{k}`"),
        Node::Deadline(k) => format!("follows deadline `{k}`"),
        Node::Status => "follows the case's status".into(),
    }
}

/// Where a definition keeps its markings once computed: cloning copies
/// them, and it takes no part in equality.
#[derive(Debug, Clone, Default)]
pub(crate) struct MarkingsCache(OnceLock<Arc<Markings>>);

impl PartialEq for MarkingsCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl CaseDefinition {
    /// The effective markings of this definition's plan (see
    /// [`Markings`]), computed on first use.
    pub fn markings(&self) -> &Markings {
        self.markings
            .0
            .get_or_init(|| Arc::new(Markings::compute(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Format;

    fn bundled(name: &str) -> CaseDefinition {
        let path = format!(
            "{}/../examples/definitions/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        CaseDefinition::parse(&std::fs::read_to_string(path).unwrap(), Format::Toml).unwrap()
    }

    #[test]
    fn a_stage_entered_on_a_restricted_field_is_restricted_and_so_is_what_follows() {
        let def = bundled("domestic-abuse");
        let m = def.markings();
        let os = Classification::OfficialSensitive;
        // `marac` is entered when risk_level == 'high': seeing it active
        // tells the risk level.
        assert_eq!(m.item("marac"), os);
        assert!(m.item_reason("marac").is_some());
        // Its children exist only while it is active.
        assert_eq!(m.item("attend_marac"), os);
        assert_eq!(m.deadline("marac_referral_1_working_day"), os);
        // `idva_referral` reads risk_level in its entry condition.
        assert_eq!(m.item("idva_referral"), os);
    }

    #[test]
    fn unrestricted_plans_stay_official() {
        let def = bundled("burglary");
        let m = def.markings();
        for e in def.plan_items() {
            let key = e.item.key().as_str();
            assert!(
                m.item(key) <= Classification::OfficialSensitive,
                "{key}: {:?}",
                m.item_reason(key)
            );
        }
    }

    #[test]
    fn markings_take_no_part_in_equality_or_the_stored_form() {
        let a = bundled("domestic-abuse");
        let b = a.clone();
        let _ = a.markings();
        assert_eq!(a, b);
        assert_eq!(a.to_msgpack().unwrap(), b.to_msgpack().unwrap());
    }
}
