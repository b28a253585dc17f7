//! The work queue: open human tasks by role, team or assignee, earliest
//! due first, and the check that the names queried are declared.

use super::*;

/// The first projection version that records the names definitions declare.
pub(super) const DECLARATIONS_SINCE: u32 = 3;

/// Lists open human tasks (ordered by due date, undated last), from the
/// serving `generation` of the tenant's `cases` projection.
///
/// Errors: [`QueryError::PageSize`], [`QueryError::Offset`];
/// [`QueryError::Invalid`] for a team that is not an identifier, or a
/// role, team or case type no deployed definition declares.
pub fn work_queue(
    generation: &Generation,
    query: &WorkQueueQuery,
    principal: &Principal,
) -> Result<Page<WorkItem>, QueryError> {
    let rows = &generation.rows;
    query.page.check()?;
    if let Some(team) = &query.team {
        crate::definition::check_identifier(team)
            .map_err(|e| e.to_string())
            .map_err(|message| QueryError::Invalid {
                parameter: "team".into(),
                message,
            })?;
    }
    check_declared(rows, query, generation.version >= DECLARATIONS_SINCE)?;
    let keep = |w: &WorkItem| {
        principal.may_see(w.classification)
            && query.tasks.lists(w.state)
            && query.case_type.as_ref().is_none_or(|t| *t == w.case_type)
            && query
                .team
                .as_ref()
                .is_none_or(|t| w.team.as_ref() == Some(t))
            && (!query.unassigned_only || w.assignee.is_none())
            && query
                .assignee
                .as_ref()
                .is_none_or(|a| w.assignee.as_ref() == Some(a))
    };
    let scan = |prefix: Vec<u8>| {
        let end = prefix_end(&prefix);
        rows.range(prefix..end)
    };
    match (&query.role, &query.assignee, &query.team) {
        (Some(role), _, _) => scan_page(scan(Key::new(P_ROLE).str(role).0), &query.page, keep),
        (None, Some(who), _) => scan_page(scan(Key::new(P_ASSIGNEE).str(who).0), &query.page, keep),
        (None, None, Some(team)) => {
            scan_page(scan(Key::new(P_TEAM).str(team).0), &query.page, keep)
        }
        (None, None, None) => {
            // The caller's roles: merge their queues by due date.
            let mut all: BTreeMap<(i64, String, u32), WorkItem> = BTreeMap::new();
            // Each role's first offset + limit + 1 tasks are enough to fill
            // the merged page and know whether there is more.
            let cap = crate::projection::query::PageRequest {
                offset: 0,
                limit: query.page.offset + query.page.limit + 1,
            };
            for role in &principal.roles {
                let p: Page<WorkItem> = scan_page(scan(Key::new(P_ROLE).str(role).0), &cap, keep)?;
                for w in p.items {
                    let k = (
                        w.due.map_or(i64::MAX, |d| d.0),
                        w.case_id.clone(),
                        w.instance.0,
                    );
                    all.insert(k, w);
                }
            }
            Ok(Page::of(all.into_values(), &query.page, false))
        }
    }
}

/// A role, team or case type that no deployed definition declares is a
/// mistake in the query, not an empty queue.
///
/// Errors: [`QueryError::Invalid`] naming the parameter (`role`, `team`,
/// `case_type`). A generation built before the projection recorded
/// declarations (`tracked` false: version 2, serving while version 3
/// rebuilds) checks nothing; a tracked one with nothing deployed refuses
/// every name.
pub(super) fn check_declared(
    rows: &Rows,
    query: &WorkQueueQuery,
    tracked: bool,
) -> Result<(), QueryError> {
    let checks = [
        ("role", D_ROLE, &query.role),
        ("team", D_TEAM, &query.team),
        ("case_type", D_TYPE, &query.case_type),
    ];
    if !tracked || checks.iter().all(|(_, _, v)| v.is_none()) {
        return Ok(());
    }
    for (parameter, kind, value) in checks {
        let Some(name) = value else { continue };
        if rows
            .get(&Key::new(P_DECLARED).raw(&[kind]).str(name).0)?
            .is_none()
        {
            return Err(QueryError::Invalid {
                parameter: parameter.into(),
                message: format!("no deployed definition declares {parameter} {name}"),
            });
        }
    }
    Ok(())
}

/// The case types deployed definitions declare in the tenant, by key,
/// from the serving `generation` of the `cases` projection (empty for a
/// generation built before declarations were recorded).
///
/// Errors: [`QueryError::Damaged`] for an undecodable row.
pub fn case_types(generation: &Generation) -> Result<Vec<String>, QueryError> {
    let prefix = Key::new(P_DECLARED).raw(&[D_TYPE]).0;
    let mut out = Vec::new();
    for row in generation.rows.scan_prefix(&prefix) {
        let (key, _) = row?;
        let (name, _) = key
            .get(prefix.len()..)
            .and_then(keys::take_str)
            .ok_or_else(|| corrupt("declared case type", "undecodable key"))?;
        out.push(name);
    }
    Ok(out)
}
