//! Which plan items and milestones a rule reads through `state` and `reached`.
//!
//! The definition validator derives an item's marking from everything its
//! rules read (see `engine/src/definition/markings.rs`); the case-file fields
//! come from `Condition::fields`, the plan from here. The walk is
//! conservative: `state.attend`, `state['attend']` and `'charged' in reached`
//! name one item, any other use of `state` or `reached` (iterating it,
//! passing it to a function) counts as reading every item or milestone.

use std::collections::BTreeSet;

use cel::common::ast::{operators, EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

/// The plan a rule reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanRefs {
    /// Items read by name through `state`.
    pub items: BTreeSet<String>,
    /// `state` read as a whole: every item counts as read.
    pub any_item: bool,
    /// Milestones read by name through `reached`.
    pub milestones: BTreeSet<String>,
    /// `reached` read as a whole: every milestone counts as read.
    pub any_milestone: bool,
}

impl PlanRefs {
    /// Adds what `other` reads.
    pub fn merge(&mut self, other: PlanRefs) {
        self.items.extend(other.items);
        self.milestones.extend(other.milestones);
        self.any_item |= other.any_item;
        self.any_milestone |= other.any_milestone;
    }
}

fn string_literal(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(n) if n == name)
}

/// What `expr` reads of the plan.
pub(crate) fn plan_refs(expr: &IdedExpr) -> PlanRefs {
    let mut out = PlanRefs::default();
    walk(expr, &mut out);
    out
}

fn walk(expr: &IdedExpr, out: &mut PlanRefs) {
    match &expr.expr {
        Expr::Ident(name) if name == "state" => out.any_item = true,
        Expr::Ident(name) if name == "reached" => out.any_milestone = true,
        Expr::Select(s) if is_ident(&s.operand, "state") => {
            out.items.insert(s.field.clone());
        }
        Expr::Select(s) => walk(&s.operand, out),
        Expr::Call(call) => {
            let named = match (call.func_name.as_str(), call.args.as_slice()) {
                (operators::INDEX, [target, key]) if is_ident(target, "state") => {
                    string_literal(key).map(|k| out.items.insert(k.to_string()))
                }
                (operators::IN, [key, list]) if is_ident(list, "reached") => {
                    string_literal(key).map(|k| out.milestones.insert(k.to_string()))
                }
                _ => None,
            };
            if named.is_some() {
                return;
            }
            if let Some(target) = &call.target {
                walk(target, out);
            }
            for arg in &call.args {
                walk(arg, out);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(|e| walk(e, out)),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(e) = &entry.expr {
                    walk(&e.key, out);
                    walk(&e.value, out);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => walk(&f.value, out),
                    EntryExpr::MapEntry(e) => {
                        walk(&e.key, out);
                        walk(&e.value, out);
                    }
                }
            }
        }
        Expr::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(e, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::Condition;

    fn refs(src: &str) -> super::PlanRefs {
        Condition::compile(src).unwrap().plan_refs()
    }

    #[test]
    fn names_items_and_milestones_read_by_name() {
        let r = refs("state.attend == 'completed' && 'charged' in reached && x > 1");
        assert_eq!(r.items.iter().collect::<Vec<_>>(), ["attend"]);
        assert_eq!(r.milestones.iter().collect::<Vec<_>>(), ["charged"]);
        assert!(!r.any_item && !r.any_milestone);
        let r = refs("state['grade'] == 'active'");
        assert_eq!(r.items.iter().collect::<Vec<_>>(), ["grade"]);
    }

    #[test]
    fn any_other_use_reads_everything() {
        assert!(refs("state.exists(k, state[k] == 'failed')").any_item);
        assert!(refs("size(reached) > 2").any_milestone);
        let r = refs("risk == 'high'");
        assert_eq!(r, super::PlanRefs::default());
    }
}
