//! Given/when/then specifications, written from CMMN behaviour (Flowable,
//! Camunda 7, Cafienne), of repetition rules, instance limits, rules for
//! required and manual activation, sentries on discretionary items,
//! autocomplete off, re-enabling, and the cascade order that keeps one
//! occurrence from firing a repeating item twice.

use serde_json::json;

use super::testing::{complete, start, update, Given};
use super::*;
use crate::rules::ItemState;

/// The shared test header (`tests.rs`) and these specifications' fields.
fn header() -> String {
    format!("{}{FIELDS}", super::tests::HEADER)
}

const FIELDS: &str = r#"
[[fields]]
key = "flag"
type = "boolean"
[[fields]]
key = "note"
type = "text"
[[fields]]
key = "count"
type = "integer"
[[fields]]
key = "answered"
type = "boolean"
[[fields]]
key = "risk"
type = "enumeration"
values = ["standard", "medium", "high"]
[[fields]]
key = "priority"
type = "enumeration"
values = ["low", "normal"]
"#;

fn given(body: &str) -> Given {
    Given::definition(
        &format!("autocomplete = true\n{}\n{body}", header()),
        &["w"],
    )
}

fn given_off(body: &str) -> Given {
    Given::definition(&format!("{}\n{body}", header()), &["w"])
}

/// The states of every instance of `key`, in creation order.
fn states(state: &CaseState, key: &str) -> Vec<ItemState> {
    state.instances(key).map(|i| i.state).collect()
}

const KEEP: &str = r#"
[[activities]]
key = "keep"
name = "Keep the case open"
kind = "human_task"
roles = ["w"]
required = true
"#;

// ------------------------------------------------------------------ 1. repetition rules

#[test]
fn a_repeating_task_with_a_counter_rule_stops_after_its_last_attempt() {
    // Re-attempt contact with a missing person's family, at most 3 times.
    let mut g = given(&format!(
        r#"{KEEP}
[[activities]]
key = "contact_family"
name = "Contact the family"
kind = "human_task"
roles = ["w"]
repeatable = true
repeat_while = "repetition < 3"
"#
    ))
    .opened(json!({}));
    for attempt in 1..=3u32 {
        let then = g.when(complete("contact_family", json!({})));
        let done = format!("completed contact_family#{}", attempt + 1);
        if attempt < 3 {
            then.then(&[
                &done,
                &format!("created contact_family#{}", attempt + 2),
                &format!("activated contact_family#{}", attempt + 2),
            ]);
        } else {
            then.then(&[&done]);
        }
        g = then.and();
    }
    assert_eq!(
        states(&g.state(), "contact_family"),
        vec![ItemState::Completed; 3]
    );
}

#[test]
fn a_repetition_rule_over_the_case_file_repeats_while_it_holds() {
    // Keep trying while the call is unanswered.
    let g = given(&format!(
        r#"{KEEP}
[[fields]]
key = "calls"
type = "integer"
[[activities]]
key = "call"
name = "Call"
kind = "human_task"
roles = ["w"]
repeatable = true
repeat_while = "answered != true"
form = [{{ field = "answered" }}]
"#
    ))
    .opened(json!({}));
    let g = g.when(complete("call", json!({ "answered": false }))).and();
    assert_eq!(
        states(&g.state(), "call"),
        vec![ItemState::Completed, ItemState::Active]
    );
    let then = g.when(complete("call", json!({ "answered": true })));
    then.then(&["completed call#3"]);
}

#[test]
fn a_repeating_stage_starts_each_repetition_with_fresh_children() {
    let g = given(&format!(
        r#"{KEEP}
[[stages]]
key = "attempt"
name = "Attempt"
autocomplete = true
repeatable = true
repeat_while = "repetition < 2"
[[stages.activities]]
key = "visit"
name = "Visit the address"
kind = "human_task"
roles = ["w"]
required = true
"#
    ))
    .opened(json!({}));
    let then = g.when(complete("visit", json!({})));
    then.then(&[
        "completed visit#3",
        "completed attempt#2",
        "created attempt#4",
        "activated attempt#4",
        "created visit#5",
        "activated visit#5",
    ]);
    let g = then.and();
    // The second attempt is the last: its completion makes no third.
    g.when(complete("visit", json!({})))
        .then(&["completed visit#5", "completed attempt#4"]);
}

// ------------------------------------------------------------------ 2. instance limits

#[test]
fn a_condition_only_repeatable_with_a_concurrency_limit_of_one_keeps_one_active_and_one_waiting() {
    let g = given(&format!(
        r#"{KEEP}
[[activities]]
key = "review"
name = "Review open reports"
kind = "human_task"
roles = ["w"]
repeatable = true
max_concurrent = 1
entry = [{{ if = "flag == true" }}]
"#
    ))
    .opened(json!({ "flag": true }));
    let waiting_and_active = |g: &Given| {
        let s = g.state();
        let live: Vec<ItemState> = states(&s, "review")
            .into_iter()
            .filter(|st| !matches!(st, ItemState::Completed))
            .collect();
        assert_eq!(live, vec![ItemState::Active, ItemState::Available]);
    };
    waiting_and_active(&g);
    // A case-file change while one runs: the waiting one stays waiting.
    let g = g.when(update(json!({ "note": "more" }))).and();
    waiting_and_active(&g);
    // Each completion lets the waiting one in and makes the next.
    let mut g = g;
    for _ in 0..3 {
        g = g.when(complete("review", json!({}))).and();
        waiting_and_active(&g);
    }
    assert_eq!(
        states(&g.state(), "review")
            .iter()
            .filter(|s| **s == ItemState::Completed)
            .count(),
        3
    );
}

#[test]
fn max_instances_bounds_a_condition_only_repeatable_over_the_whole_case() {
    let g = given(&format!(
        r#"{KEEP}
[[activities]]
key = "check"
name = "Check"
kind = "human_task"
roles = ["w"]
repeatable = true
max_instances = 2
entry = [{{ if = "flag == true" }}]
"#
    ))
    .opened(json!({ "flag": true }));
    // The first fires at opening; the second (the last allowed) waits.
    assert_eq!(
        states(&g.state(), "check"),
        vec![ItemState::Active, ItemState::Available]
    );
    let g = g.when(update(json!({ "count": 1 }))).and();
    let g = g.when(update(json!({ "count": 2 }))).and();
    assert_eq!(
        states(&g.state(), "check"),
        vec![ItemState::Active, ItemState::Active]
    );
}

#[test]
fn a_repeatable_discretionary_item_is_planned_at_most_max_instances_times() {
    let g = given(&format!(
        r#"{KEEP}
[[activities]]
key = "house_to_house"
name = "House-to-house enquiries"
kind = "human_task"
roles = ["w"]
discretionary = true
repeatable = true
max_instances = 2
max_concurrent = 1
"#
    ))
    .opened(json!({}));
    let plan = || CaseCommand::AddDiscretionary {
        item: "house_to_house".into(),
        stage: None,
    };
    let g = g.when(plan()).and();
    let err = g.when(plan()).error();
    assert!(err.to_string().contains("max_concurrent is 1"), "{err}");
    let g = g.when(complete("house_to_house", json!({}))).and();
    let g = g.when(plan()).and();
    let g = g.when(complete("house_to_house", json!({}))).and();
    let err = g.when(plan()).error();
    assert!(err.to_string().contains("max_instances is 2"), "{err}");
}

// ------------------------------------------------------------------ 3. required and manual rules

#[test]
fn a_referral_is_required_only_when_the_risk_is_high() {
    let body = r#"
[[stages]]
key = "safeguarding"
name = "Safeguarding"
autocomplete = true
[[stages.activities]]
key = "dash"
name = "DASH risk assessment"
kind = "human_task"
roles = ["w"]
required = true
form = [{ field = "risk" }]
[[stages.activities]]
key = "marac_referral"
name = "MARAC referral"
kind = "human_task"
roles = ["w"]
manual_activation = true
required_if = "risk == 'high'"
"#;
    // Standard risk: the optional referral does not hold the stage open.
    let g = given(body).opened(json!({}));
    g.when(complete("dash", json!({ "risk": "standard" })))
        .then(&[
            "completed dash#2",
            "terminated marac_referral#3",
            "completed safeguarding#1",
            "case completed",
        ]);
    // High risk: it does, until it is done.
    let then = g.when(complete("dash", json!({ "risk": "high" })));
    then.then(&["completed dash#2"]);
    let g = then.and().command(start("marac_referral"));
    g.when(complete("marac_referral", json!({})))
        .then_includes(&["completed marac_referral#3", "completed safeguarding#1"]);
}

#[test]
fn manual_start_only_for_low_priority_reports() {
    let body = format!(
        r#"{KEEP}
[[activities]]
key = "follow_up"
name = "Follow up"
kind = "human_task"
roles = ["w"]
manual_activation_if = "priority == 'low'"
entry = [{{ on = [{{ changed = "note" }}] }}]
"#
    );
    let g = given(&body).opened(json!({ "priority": "low" }));
    g.when(update(json!({ "note": "x" })))
        .then(&["updated note", "enabled follow_up#2"]);
    let g = given(&body).opened(json!({ "priority": "normal" }));
    g.when(update(json!({ "note": "x" })))
        .then(&["updated note", "activated follow_up#2"]);
}

// ------------------------------------------------------------------ 4. sentries on discretionary items

#[test]
fn a_planned_discretionary_item_waits_for_its_sentry() {
    let g = given(&format!(
        r#"{KEEP}
[[activities]]
key = "forensics"
name = "Forensic examination"
kind = "human_task"
roles = ["w"]
discretionary = true
entry = [{{ on = [{{ changed = "note" }}], if = "flag == true" }}]
"#
    ))
    .opened(json!({}));
    let then = g.when(CaseCommand::AddDiscretionary {
        item: "forensics".into(),
        stage: None,
    });
    then.then(&["planned forensics", "created forensics#2"]);
    let g = then.and();
    assert_eq!(states(&g.state(), "forensics"), vec![ItemState::Available]);
    g.when(update(json!({ "note": "scene", "flag": false })))
        .then(&["updated flag,note"]);
    let g = g.when(update(json!({ "flag": true }))).and();
    assert_eq!(states(&g.state(), "forensics"), vec![ItemState::Available]);
    g.when(update(json!({ "note": "scene 2" })))
        .then(&["updated note", "activated forensics#2"]);
}

// ------------------------------------------------------------------ 6. one occurrence, one firing

#[test]
fn one_occurrence_fires_a_repeating_stage_once_even_when_a_sibling_completes_in_the_cascade() {
    // `round` repeats with each round of enquiries; `escalate` repeats
    // after a round completes while the flag holds. The officer completes
    // the second round's task and sets the flag in one command: the
    // waiting `escalate` (latched on round 1) fires once. Its successor is
    // made after the round's own autocompletion in the same cascade, so it
    // does not fire from it too.
    let g = given(&format!(
        r#"{KEEP}
[[stages]]
key = "round"
name = "Round of enquiries"
autocomplete = true
repeatable = true
[[stages.activities]]
key = "enquire"
name = "Enquire"
kind = "human_task"
roles = ["w"]
required = true
form = [{{ field = "flag" }}]
[[stages]]
key = "escalate"
name = "Escalate"
autocomplete = true
repeatable = true
entry = [{{ on = [{{ completed = "round" }}], if = "flag == true" }}]
[[stages.activities]]
key = "brief_supervisor"
name = "Brief the supervisor"
kind = "human_task"
roles = ["w"]
"#
    ))
    .opened(json!({}));
    let g = g.when(complete("enquire", json!({ "flag": false }))).and();
    assert_eq!(states(&g.state(), "escalate"), vec![ItemState::Available]);
    let then = g.when(complete("enquire", json!({ "flag": true })));
    let s = then.state();
    assert_eq!(
        states(&s, "escalate"),
        vec![ItemState::Active, ItemState::Available],
        "{:#?}",
        then.briefs()
    );
    assert_eq!(
        states(&s, "brief_supervisor"),
        vec![ItemState::Active],
        "{:#?}",
        then.briefs()
    );
}

// ------------------------------------------------------------------ 7. exit before repetition

#[test]
fn a_case_exit_stops_a_repetition_loop_instead_of_the_cascade_bound() {
    // A stage of automatic steps that repeats on completion, and a case
    // exit that ends the case after the third round: the exit takes effect
    // before a fourth repetition is made.
    let g = Given::definition(
        &format!(
            r#"autocomplete = true
exit = [{{ if = "count >= 3" }}]
{}
{KEEP}
[[stages]]
key = "cycle"
name = "Cycle"
autocomplete = true
repeatable = true
[[stages.activities]]
key = "tick"
name = "Tick"
kind = "automatic"
set = {{ count = "count + 1" }}
"#,
            header()
        ),
        &["w"],
    );
    let then = g.when(super::testing::open(json!({ "count": 0 })));
    let s = then.state();
    assert_eq!(s.status, CaseStatus::Terminated, "{:#?}", then.briefs());
    assert_eq!(
        s.case_file[&crate::definition::FieldKey::new("count")],
        json!(3)
    );
    assert_eq!(s.instances("cycle").count(), 3);
}

// ------------------------------------------------------------------ 8. autocomplete off

#[test]
fn a_case_with_autocomplete_off_and_no_plan_items_stays_active_until_closed() {
    let g = given_off("").opened(json!({}));
    assert_eq!(g.state().status, CaseStatus::Active);
    let g = g.when(update(json!({ "note": "x" }))).and();
    assert_eq!(g.state().status, CaseStatus::Active);
    g.when(CaseCommand::CompleteCase).then(&["case completed"]);
}

#[test]
fn with_autocomplete_off_a_discretionary_item_still_to_plan_keeps_the_stage_open() {
    let g = given(&format!(
        r#"{KEEP}
[[stages]]
key = "investigation"
name = "Investigation"
[[stages.activities]]
key = "statement"
name = "Take a statement"
kind = "human_task"
roles = ["w"]
[[stages.activities]]
key = "cctv"
name = "CCTV trawl"
kind = "human_task"
roles = ["w"]
discretionary = true
"#
    ))
    .opened(json!({}));
    // Every planned child done, but the CCTV trawl could still be planned.
    let then = g.when(complete("statement", json!({})));
    then.then(&["completed statement#3"]);
    let g = then.and();
    let then = g.when(CaseCommand::AddDiscretionary {
        item: "cctv".into(),
        stage: Some("investigation".into()),
    });
    let g = then.and();
    // Planned and done: nothing left to plan, every child terminal.
    g.when(complete("cctv", json!({})))
        .then(&["completed cctv#4", "completed investigation#2"]);
}

#[test]
fn with_autocomplete_off_an_empty_stage_waits_for_a_person() {
    let g = given(&format!(
        r#"{KEEP}
[[stages]]
key = "holding"
name = "Holding"
[[stages.activities]]
key = "extra"
name = "Extra enquiries"
kind = "human_task"
roles = ["w"]
discretionary = true
"#
    ))
    .opened(json!({}));
    assert_eq!(states(&g.state(), "holding"), vec![ItemState::Active]);
    g.when(complete("holding", json!({})))
        .then(&["completed holding#2"]);
}

// ------------------------------------------------------------------ 5. re-enable

#[test]
fn a_disabled_item_can_be_enabled_again_while_its_stage_is_active() {
    let g = given(&format!(
        r#"{KEEP}
[[activities]]
key = "victim_contact"
name = "Victim contact"
kind = "human_task"
roles = ["w"]
manual_activation = true
"#
    ))
    .opened(json!({}));
    let g = g
        .when(CaseCommand::Disable {
            item: "victim_contact".into(),
        })
        .and();
    let then = g.when(CaseCommand::Reenable {
        item: "victim_contact".into(),
    });
    then.then(&["enabled victim_contact#2"]);
    let g = then.and().command(start("victim_contact"));
    assert_eq!(
        states(&g.state(), "victim_contact"),
        vec![ItemState::Active]
    );
    g.when(CaseCommand::Reenable {
        item: "victim_contact".into(),
    })
    .then_error(CaseError::IllegalTransition {
        item: "victim_contact".into(),
        from: ItemState::Active,
        action: "re-enable".into(),
    });
}

// ------------------------------------------------------------------ property

mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::testing::{brief, fields, outputs, who, NOW};
    use super::super::*;
    use crate::definition::CaseDefinition;

    /// One generated plan item: automatic or human, optionally repeatable
    /// (with a rule, a limit or neither), with an entry criterion drawn
    /// from a few shapes.
    #[derive(Debug, Clone)]
    struct Item {
        human: bool,
        repeatable: bool,
        repeat_while: bool,
        max_instances: Option<u32>,
        max_concurrent: bool,
        entry: u8,
        required_if: bool,
        manual_if: bool,
        in_stage: bool,
        discretionary: bool,
    }

    fn item() -> impl Strategy<Value = Item> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(1u32..4),
            any::<bool>(),
            0u8..5,
            (any::<bool>(), any::<bool>(), any::<bool>(), 0u8..6),
        )
            .prop_map(
                |(
                    human,
                    repeatable,
                    repeat_while,
                    max_instances,
                    max_concurrent,
                    entry,
                    (req, man, stage, disc),
                )| Item {
                    human,
                    repeatable,
                    repeat_while,
                    max_instances,
                    max_concurrent,
                    entry,
                    required_if: req,
                    manual_if: man,
                    in_stage: stage,
                    discretionary: disc == 0,
                },
            )
    }

    /// A TOML definition of `items` (item `i` is keyed `i{i}`), with every
    /// repeatable item bounded when `bounded`.
    fn toml(items: &[Item], bounded: bool, autocomplete: bool) -> String {
        let mut out = format!(
            "key = \"p\"\nname = \"P\"\nversion = 1\nautocomplete = {autocomplete}\n\
             [retention]\ngroup = \"group3\"\n[permissions]\nopen = [\"w\"]\n\
             update_case_file = [\"w\"]\nadd_discretionary = [\"w\"]\nclose = [\"w\"]\n\
             [[fields]]\nkey = \"flag\"\ntype = \"boolean\"\n\
             [[fields]]\nkey = \"n\"\ntype = \"integer\"\n"
        );
        let mut top = String::new();
        let mut staged = String::new();
        for (i, it) in items.iter().enumerate() {
            let (table, sink) = if it.in_stage {
                ("[[stages.activities]]", &mut staged)
            } else {
                ("[[activities]]", &mut top)
            };
            sink.push_str(&format!("{table}\nkey = \"i{i}\"\nname = \"I{i}\"\n"));
            if it.human {
                sink.push_str("kind = \"human_task\"\nroles = [\"w\"]\n");
            } else {
                sink.push_str("kind = \"automatic\"\nset = { n = \"n + 1\" }\n");
            }
            let entry = match it.entry {
                1 => Some("[{ if = \"flag == true\" }]".to_string()),
                2 if i > 0 => Some(format!("[{{ on = [{{ completed = \"i{}\" }}] }}]", i - 1)),
                3 => Some("[{ on = [{ changed = \"n\" }] }]".to_string()),
                4 if i > 0 => Some(format!(
                    "[{{ on = [{{ completed = \"i{}\" }}], if = \"n < 50\" }}]",
                    i - 1
                )),
                _ => None,
            };
            if let Some(e) = &entry {
                sink.push_str(&format!("entry = {e}\n"));
            }
            if it.discretionary && it.human {
                sink.push_str("discretionary = true\n");
            }
            if it.required_if {
                sink.push_str("required_if = \"flag == true\"\n");
            }
            if it.manual_if && it.human {
                sink.push_str("manual_activation_if = \"n > 2\"\n");
            }
            if it.repeatable {
                sink.push_str("repeatable = true\n");
                if it.repeat_while {
                    sink.push_str("repeat_while = \"repetition < 3\"\n");
                }
                let limit = it.max_instances.or(bounded.then_some(3));
                if let Some(m) = limit {
                    sink.push_str(&format!("max_instances = {m}\n"));
                }
                if it.max_concurrent && (entry.is_some() || (it.discretionary && it.human)) {
                    sink.push_str("max_concurrent = 1\n");
                }
            }
        }
        out.push_str(&top);
        if !staged.is_empty() {
            out.push_str("[[stages]]\nkey = \"s\"\nname = \"S\"\nautocomplete = true\n");
            out.push_str("entry = [{ if = \"flag == true\" }]\n");
            out.push_str(&staged);
        }
        out
    }

    fn command(n: usize) -> impl Strategy<Value = CaseCommand> {
        let key = (0..n).prop_map(|i| ItemRef::key(format!("i{i}").as_str()));
        prop_oneof![
            3 => any::<bool>().prop_map(|b| CaseCommand::UpdateCaseFile { changes: fields(json!({ "flag": b })) }),
            3 => (0i64..6).prop_map(|v| CaseCommand::UpdateCaseFile { changes: fields(json!({ "n": v })) }),
            6 => key.clone().prop_map(|item| CaseCommand::Complete { item, outputs: outputs(json!({})) }),
            2 => key.clone().prop_map(|item| CaseCommand::Start { item }),
            1 => key.clone().prop_map(|item| CaseCommand::Disable { item }),
            1 => key.clone().prop_map(|item| CaseCommand::Reenable { item }),
            1 => key.clone().prop_map(|item| CaseCommand::Terminate { item }),
            2 => (0..n).prop_map(|i| CaseCommand::AddDiscretionary { item: format!("i{i}").as_str().into(), stage: None }),
            1 => Just(CaseCommand::CompleteCase),
        ]
    }

    /// Runs `commands` on a case of `def`: every error is typed, and
    /// incremental state equals replay after each command. Returns whether
    /// any command met the cascade bound.
    fn run(def: &CaseDefinition, commands: &[CaseCommand]) -> Result<bool, TestCaseError> {
        let w = who(&["w"]);
        let mut events = decide(
            def,
            &CaseState::default(),
            &w,
            super::super::testing::open(json!({ "n": 0 })),
            NOW,
        )
        .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
        let mut state =
            CaseState::replay(def, &events).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut hit = false;
        for c in commands {
            match decide(def, &state, &w, c.clone(), NOW) {
                Ok(new) => {
                    for e in &new {
                        state.apply(def, e).map_err(|err| {
                            TestCaseError::fail(format!("apply {}: {err}", brief(e)))
                        })?;
                    }
                    events.extend(new);
                    let replayed = CaseState::replay(def, &events)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(&state, &replayed);
                }
                Err(CaseError::CascadeLimit { .. }) => hit = true,
                Err(_) => {}
            }
        }
        Ok(hit)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Every repeatable item bounded (a limit of at most 3 instances):
        /// no command meets the cascade bound, and replay equals
        /// incremental.
        #[test]
        fn bounded_repetition_never_meets_the_cascade_bound(
            items in proptest::collection::vec(item(), 1..7),
            autocomplete in any::<bool>(),
            commands in proptest::collection::vec(command(6), 1..30),
        ) {
            let source = toml(&items, true, autocomplete);
            let Ok(def) = CaseDefinition::from_toml(&source) else {
                return Ok(());
            };
            let hit = run(&def, &commands)?;
            prop_assert!(!hit, "a bounded definition met the cascade bound:\n{source}");
        }

        /// Unbounded repetition: a definition the validator accepts opens
        /// (with neutral values) within the bound; later commands either
        /// stay within it or fail with the typed error, never a panic, and
        /// replay equals incremental.
        #[test]
        fn accepted_definitions_open_within_the_bound_and_replay_matches(
            items in proptest::collection::vec(item(), 1..7),
            autocomplete in any::<bool>(),
            commands in proptest::collection::vec(command(6), 1..30),
        ) {
            let source = toml(&items, false, autocomplete);
            let Ok(def) = CaseDefinition::from_toml(&source) else {
                return Ok(());
            };
            run(&def, &commands)?;
        }
    }
}
