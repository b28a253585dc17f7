//! The deadline list: running deadlines due by a time, earliest first.

use super::*;

/// Lists running deadlines due by `query.due_before`, earliest first.
///
/// Errors: [`QueryError::PageSize`], [`QueryError::Offset`].
pub fn deadlines(
    rows: &Rows,
    query: &DeadlineQuery,
    principal: &Principal,
) -> Result<Page<DeadlineEntry>, QueryError> {
    query.page.check()?;
    let start = vec![P_DEADLINE];
    let end = match query.due_before.0.checked_add(1) {
        Some(t) => Key::new(P_DEADLINE).i64(t).0,
        None => prefix_end(&start),
    };
    let mut page = scan_page(rows.range(start..end), &query.page, |d: &DeadlineEntry| {
        principal.may_see(d.classification)
            && query.case_type.as_ref().is_none_or(|t| *t == d.case_type)
    })?;
    for d in &mut page.items {
        d.overdue = d.due_at < query.now;
    }
    Ok(page)
}
