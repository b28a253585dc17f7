//! Case search: predicates over the index ranges, intersected most
//! selective first, then a page loaded and sorted or walked in order.
//!
//! A restricted subject's fields (see [`crate::records::restriction`]) are
//! left out when the index is read: a field condition on a withheld field
//! of a case does not match it, and a word matches a case only through a
//! field of it that is not withheld, so neither the hit nor the total
//! tells that the data is there.

use super::*;

/// Case ids of the keys in `[from, to)`, each key being `prefix_len` bytes of
/// index part and then the case id, whose value passes `value_ok(id, value)`.
pub(super) fn ids_in_range(
    rows: &Rows,
    from: Vec<u8>,
    to: Vec<u8>,
    skip: impl Fn(&[u8]) -> Option<usize>,
    out: &mut HashSet<Vec<u8>>,
    within: Option<&HashSet<Vec<u8>>>,
    value_ok: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<(), QueryError> {
    for kv in rows.range(from..to) {
        let (k, v) = kv?;
        let Some(n) = skip(&k) else {
            continue;
        };
        let id = &k[n..];
        if !value_ok(id, &v) {
            continue;
        }
        if within.is_none_or(|w| w.contains(id)) {
            out.insert(id.to_vec());
        }
    }
    Ok(())
}

/// One search condition as key ranges (any range matches) over keys whose
/// case id starts at a computable offset.
pub(super) struct Predicate {
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the case id starts, given a key in the range.
    id_at: IdAt,
    /// Minimum clearance byte check on the value (text index).
    max_class: Option<u8>,
    /// Text index: the word must be in this field (encoded key).
    in_field: Option<Vec<u8>>,
    /// The field a field condition (or a words-in-field one) is on.
    field: Option<String>,
    /// Over the text index: the value lists the fields holding the word.
    text: bool,
}

impl Predicate {
    /// Whether an index entry of case `id` with `value` matches for the
    /// reader, given the fields `restricted` cases withhold.
    fn admits(
        &self,
        id: &[u8],
        value: &[u8],
        restricted: &HashMap<Vec<u8>, BTreeSet<String>>,
    ) -> bool {
        let within = self
            .max_class
            .is_none_or(|m| value.first().is_some_and(|c| *c <= m));
        if !within
            || !self
                .in_field
                .as_ref()
                .is_none_or(|f| word_in_field(value, f))
        {
            return false;
        }
        let Some(withheld) = restricted.get(id) else {
            return true;
        };
        if self.field.as_ref().is_some_and(|f| withheld.contains(f)) {
            return false;
        }
        !self.text || word_fields(value).any(|f| !withheld.contains(&f))
    }
}

/// The fields a text-index value (class byte, then field keys) lists.
fn word_fields(value: &[u8]) -> impl Iterator<Item = String> + '_ {
    let mut rest = value.get(1..).unwrap_or_default();
    std::iter::from_fn(move || {
        let (field, after) = keys::take_str(rest)?;
        rest = after;
        Some(field)
    })
}

#[derive(Clone, Copy)]
pub(super) enum IdAt {
    /// Fixed prefix length (every key the same length before the id).
    Fixed(usize),
    /// After one encoded string following a fixed prefix.
    AfterString(usize),
}

impl IdAt {
    fn offset(self, key: &[u8]) -> Option<usize> {
        match self {
            IdAt::Fixed(n) => Some(n).filter(|n| *n <= key.len()),
            IdAt::AfterString(n) => {
                let (_, rest) = keys::take_str(key.get(n..)?)?;
                Some(key.len() - rest.len())
            }
        }
    }
}

pub(super) fn eq_predicate(prefix: Vec<u8>, values: &[Vec<u8>]) -> Predicate {
    let len = prefix.len();
    let mut ranges = Vec::new();
    let mut id_at = IdAt::Fixed(len);
    for v in values {
        let mut start = prefix.clone();
        start.extend_from_slice(v);
        id_at = IdAt::Fixed(start.len());
        let end = prefix_end(&start);
        ranges.push((start, end));
    }
    Predicate {
        ranges,
        id_at,
        max_class: None,
        in_field: None,
        field: None,
        text: false,
    }
}

/// Whether a text-index value (class byte, then field keys) lists `field`.
pub(super) fn word_in_field(value: &[u8], field: &[u8]) -> bool {
    let mut rest = value.get(1..).unwrap_or_default();
    while !rest.is_empty() {
        let Some((_, after)) = keys::take_str(rest) else {
            return false;
        };
        if &rest[..rest.len() - after.len()] == field {
            return true;
        }
        rest = after;
    }
    false
}

/// One predicate per word, over the text index.
pub(super) fn word_predicates(
    text: &str,
    parameter: &str,
    principal: &Principal,
    in_field: Option<&str>,
) -> Result<Vec<Predicate>, QueryError> {
    let ws: BTreeSet<String> = words(text).collect();
    if ws.is_empty() {
        return Err(QueryError::Invalid {
            parameter: parameter.into(),
            message: "give at least one word of 2 to 40 letters or digits".into(),
        });
    }
    let field = in_field.map(str::to_string);
    let in_field = in_field.map(|f| Key::default().str(f).0);
    Ok(ws
        .into_iter()
        .map(|w| {
            let start = Key::new(P_TEXT).str(&w).0;
            let n = start.len();
            Predicate {
                ranges: vec![(start.clone(), prefix_end(&start))],
                id_at: IdAt::Fixed(n),
                max_class: Some(class_byte(principal.clearance)),
                in_field: in_field.clone(),
                field: field.clone(),
                text: true,
            }
        })
        .collect())
}

pub(super) fn time_predicate(attr: &[u8], range: &TimeRange) -> Predicate {
    let prefix = Key::new(P_INDEX).raw(attr).0;
    let from = Key(prefix.clone())
        .i64(range.from.map_or(i64::MIN, |t| t.0))
        .0;
    let to = match range.to {
        Some(t) if t.0 < i64::MAX => Key(prefix.clone()).i64(t.0 + 1).0,
        _ => prefix_end(&prefix),
    };
    Predicate {
        ranges: vec![(from, to)],
        id_at: IdAt::Fixed(prefix.len() + 8),
        max_class: None,
        in_field: None,
        field: None,
        text: false,
    }
}

pub(super) fn check_field_value(
    case_type: &str,
    fdef: &FieldDef,
    v: &serde_json::Value,
) -> Result<Vec<u8>, QueryError> {
    let ty = match fdef.ty {
        FieldType::List => fdef.element.unwrap_or(FieldType::Text),
        t => t,
    };
    let as_field = FieldDef {
        ty,
        element: None,
        ..fdef.clone()
    };
    crate::case::check_value(&as_field, v)
        .map_err(|e| e.to_string())
        .map_err(|message| QueryError::WrongType {
            field: fdef.key.as_str().to_string(),
            message,
        })?;
    encode_value(ty, v).ok_or_else(|| QueryError::Unsupported {
        field: fdef.key.as_str().to_string(),
        field_type: fdef.ty.as_str().to_string(),
        operation: format!("searching ({case_type}: this value is not indexed)"),
    })
}

/// Above this many candidates (or with no condition that bounds them),
/// search walks the index of its sort order and stops at the page's end
/// rather than loading and sorting every candidate; such a page has no
/// `total`.
pub(super) const ORDERED_WALK_OVER: usize = 1_000;

/// One page of a search by walking the sort order's index: cases in order,
/// kept if they are candidates (all are, when `candidates` is `None`) and
/// pass `keep`, until the page and one more are found.
pub(super) fn ordered_page(
    rows: &Rows,
    query: &SearchQuery,
    candidates: Option<&HashSet<Vec<u8>>>,
    keep: &dyn Fn(&CaseSummary) -> bool,
    clearance: Classification,
) -> Result<Page<CaseSummary>, QueryError> {
    let want = query.page.offset + query.page.limit + 1;
    let (prefix, descending) = match query.order {
        SearchOrder::OpenedDescending => (Key::new(P_INDEX).raw(A_OPENED).0, true),
        SearchOrder::OpenedAscending => (Key::new(P_INDEX).raw(A_OPENED).0, false),
        SearchOrder::UpdatedDescending => (Key::new(P_INDEX).raw(A_UPDATED).0, true),
        SearchOrder::UpdatedAscending => (Key::new(P_INDEX).raw(A_UPDATED).0, false),
        SearchOrder::CaseId => (vec![P_SUMMARY], false),
    };
    // Summary keys are the case id; time index keys add the time.
    let id_at = if prefix == [P_SUMMARY] {
        1
    } else {
        prefix.len() + 8
    };
    let scan = rows.scan_prefix(&prefix);
    let scan = if descending { scan.reversed() } else { scan };
    let mut found = Vec::new();
    for row in scan {
        let (k, v) = row?;
        let Some(id) = k.get(id_at..) else { continue };
        if candidates.is_some_and(|c| !c.contains(id)) {
            continue;
        }
        let summary = if id_at == 1 {
            Some(decode_summary(&v, clearance)?)
        } else {
            load_summary(rows, id, clearance)?
        };
        if let Some(s) = summary.filter(|s| keep(s)) {
            found.push(s);
            if found.len() == want {
                break;
            }
        }
    }
    let more = found.len() == want;
    Ok(page_of(found, &query.page, more, None))
}

/// The requested page of `found` (results in order from the first);
/// `more`: results follow the page.
pub(super) fn page_of(
    found: Vec<CaseSummary>,
    page: &crate::projection::query::PageRequest,
    more: bool,
    total: Option<usize>,
) -> Page<CaseSummary> {
    Page {
        items: found
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect(),
        next_offset: more.then_some(page.offset + page.limit),
        total,
    }
}

/// Runs a case search against a `cases` tree. `def` is the latest definition
/// of the query's case type (needed when it filters on fields or text).
///
/// Errors: [`QueryError::PageSize`], [`QueryError::Offset`],
/// [`QueryError::FieldNeedsCaseType`], [`QueryError::UnknownField`],
/// [`QueryError::WrongType`], [`QueryError::Unsupported`],
/// [`QueryError::FieldNotVisible`], [`QueryError::Invalid`].
///
/// `restricted`: the case ids (as in index keys) with restricted subjects
/// and the fields each withholds ([`crate::records::restriction`]).
pub fn search(
    rows: &Rows,
    query: &SearchQuery,
    def: Option<&CaseDefinition>,
    principal: &Principal,
    restricted: &HashMap<Vec<u8>, BTreeSet<String>>,
) -> Result<Page<CaseSummary>, QueryError> {
    validate(query, def)?;
    let plan = plan(query, def, principal)?;
    execute(rows, query, &plan, principal, restricted)
}

/// A validated search as index predicates.
pub(super) struct Plan {
    /// One per condition, most selective first.
    preds: Vec<Predicate>,
    /// Type and status are checked on each candidate's summary (another
    /// condition bounds the candidates) rather than by their index ranges.
    post_filter: bool,
}

/// Step 1: checks of the query against itself and the definition that need
/// no encoding of values (page, ranges, text searchability, stage).
///
/// Errors: [`QueryError::PageSize`], [`QueryError::Offset`],
/// [`QueryError::Invalid`].
pub(super) fn validate(
    query: &SearchQuery,
    def: Option<&CaseDefinition>,
) -> Result<(), QueryError> {
    query.page.check()?;
    if let (Some(_), Some(def)) = (&query.text, def) {
        if !def.fields.iter().any(|f| f.text_searchable()) {
            return Err(QueryError::Invalid {
                parameter: "text".into(),
                message: format!("case type {} marks no field search = \"text\"", def.key),
            });
        }
    }
    if let (Some(stage), Some(def)) = (&query.stage, def) {
        if !def
            .plan_items()
            .iter()
            .any(|e| matches!(e.item, PlanItem::Stage(_)) && e.item.key().as_str() == stage)
        {
            return Err(QueryError::Invalid {
                parameter: "stage".into(),
                message: format!("case type {} has no stage {stage}", def.key),
            });
        }
    }
    if let Some(r) = &query.opened {
        check_range("opened", r)?;
    }
    if let Some(r) = &query.updated {
        check_range("updated", r)?;
    }
    Ok(())
}

/// Step 2: the query's conditions as index predicates, most selective
/// first (field conditions are checked against their field's type here, as
/// their values are encoded).
///
/// Errors: [`QueryError::FieldNeedsCaseType`], [`QueryError::UnknownField`],
/// [`QueryError::WrongType`], [`QueryError::Unsupported`],
/// [`QueryError::NotTextSearchable`], [`QueryError::FieldNotVisible`],
/// [`QueryError::Invalid`].
pub(super) fn plan(
    query: &SearchQuery,
    def: Option<&CaseDefinition>,
    principal: &Principal,
) -> Result<Plan, QueryError> {
    let mut preds: Vec<Predicate> = Vec::new();
    // Most selective conditions first: they bound the candidate set.
    if let Some(text) = &query.text {
        preds.extend(word_predicates(text, "text", principal, None)?);
    }
    for filter in &query.fields {
        let Some(case_type) = &query.case_type else {
            return Err(QueryError::FieldNeedsCaseType {
                field: filter.field.clone(),
            });
        };
        let Some(def) = def else {
            return Err(QueryError::FieldNeedsCaseType {
                field: filter.field.clone(),
            });
        };
        let Some(fdef) = def.field(&filter.field) else {
            return Err(QueryError::UnknownField {
                case_type: case_type.clone(),
                field: filter.field.clone(),
                known: def
                    .fields
                    .iter()
                    .map(|f| f.key.as_str().to_string())
                    .collect(),
            });
        };
        let needed = fdef.classification.unwrap_or_default();
        if !principal.may_see(needed) {
            return Err(QueryError::FieldNotVisible {
                field: filter.field.clone(),
                needed,
            });
        }
        if fdef.ty == FieldType::GeoPoint {
            return Err(QueryError::Unsupported {
                field: filter.field.clone(),
                field_type: fdef.ty.as_str().to_string(),
                operation: "filtering".into(),
            });
        }
        let prefix = Key::new(P_FIELD).str(case_type).str(&filter.field).0;
        match &filter.condition {
            FieldCondition::Words(text) => {
                if !fdef.text_searchable() {
                    return Err(QueryError::NotTextSearchable {
                        case_type: case_type.clone(),
                        field: filter.field.clone(),
                        searchable: def
                            .fields
                            .iter()
                            .filter(|f| f.text_searchable())
                            .map(|f| f.key.as_str().to_string())
                            .collect(),
                    });
                }
                preds.extend(word_predicates(
                    text,
                    &format!("words in {}", filter.field),
                    principal,
                    Some(&filter.field),
                )?);
            }
            FieldCondition::Equals(v) => {
                let enc = check_field_value(case_type, fdef, v)?;
                let mut p = eq_predicate(prefix, &[enc]);
                p.max_class = Some(class_byte(principal.clearance));
                p.field = Some(filter.field.clone());
                preds.push(p);
            }
            FieldCondition::OneOf(vs) => {
                if vs.is_empty() || vs.len() > 100 {
                    return Err(QueryError::Invalid {
                        parameter: format!("one_of on {}", filter.field),
                        message: "give 1 to 100 values".into(),
                    });
                }
                let encs = vs
                    .iter()
                    .map(|v| check_field_value(case_type, fdef, v))
                    .collect::<Result<Vec<_>, _>>()?;
                // Equal-length encodings share one id offset; strings differ,
                // so each range gets its own predicate pass below.
                let mut p = eq_predicate(prefix.clone(), &encs);
                p.max_class = Some(class_byte(principal.clearance));
                p.field = Some(filter.field.clone());
                if encs.iter().any(|e| e.len() != encs[0].len()) {
                    p.id_at = IdAt::AfterString(prefix.len() + 1);
                }
                preds.push(p);
            }
            FieldCondition::Between { from, to } => {
                let ty = match fdef.ty {
                    FieldType::List => fdef.element.unwrap_or(FieldType::Text),
                    t => t,
                };
                if matches!(ty, FieldType::Boolean | FieldType::GeoPoint) {
                    return Err(QueryError::Unsupported {
                        field: filter.field.clone(),
                        field_type: fdef.ty.as_str().to_string(),
                        operation: "ranges".into(),
                    });
                }
                if from.is_none() && to.is_none() {
                    return Err(QueryError::Invalid {
                        parameter: format!("range on {}", filter.field),
                        message: "give a lower bound, an upper bound or both".into(),
                    });
                }
                let lo = from
                    .as_ref()
                    .map(|v| check_field_value(case_type, fdef, v))
                    .transpose()?;
                let hi = to
                    .as_ref()
                    .map(|v| check_field_value(case_type, fdef, v))
                    .transpose()?;
                if let (Some(a), Some(b)) = (&lo, &hi) {
                    if a > b {
                        return Err(QueryError::Invalid {
                            parameter: format!("range on {}", filter.field),
                            message: "the lower bound is above the upper bound".into(),
                        });
                    }
                }
                let tag = lo.as_ref().or(hi.as_ref()).map_or(0, |e| e[0]);
                let mut start = prefix.clone();
                match lo {
                    Some(l) => start.extend_from_slice(&l),
                    None => start.push(tag),
                }
                let end = match hi {
                    Some(h) => prefix_end(&[prefix.as_slice(), &h].concat()),
                    None => prefix_end(&[prefix.as_slice(), &[tag]].concat()),
                };
                let id_at = if tag == keys::TAG_STRING {
                    IdAt::AfterString(prefix.len() + 1)
                } else if tag == keys::TAG_BOOL {
                    IdAt::Fixed(prefix.len() + 2)
                } else {
                    IdAt::Fixed(prefix.len() + 9)
                };
                preds.push(Predicate {
                    ranges: vec![(start, end)],
                    id_at,
                    // Values keep the marking they were written under.
                    max_class: Some(class_byte(principal.clearance)),
                    in_field: None,
                    field: Some(filter.field.clone()),
                    text: false,
                });
            }
        }
    }
    if let Some(stage) = &query.stage {
        // Only cases where the stage is within the reader's clearance: which
        // stage is active can tell a restricted field's value.
        let mut p = eq_predicate(
            Key::new(P_INDEX).raw(A_STAGE).0,
            &[Key::default().str(stage).0],
        );
        p.max_class = Some(class_byte(principal.clearance));
        preds.push(p);
    }
    if let Some(r) = &query.opened {
        preds.push(time_predicate(A_OPENED, r));
    }
    if let Some(r) = &query.updated {
        preds.push(time_predicate(A_UPDATED, r));
    }
    // Type and status match most cases: when another condition already
    // bounds the candidates, check them on each candidate's summary instead
    // of collecting their (large) index ranges.
    let post_filter = !preds.is_empty();
    if !post_filter {
        if !query.status.is_empty() {
            let vals: Vec<Vec<u8>> = query
                .status
                .iter()
                .map(|s| Key::default().str(s.as_str()).0)
                .collect();
            let mut p = eq_predicate(Key::new(P_INDEX).raw(A_STATUS).0, &vals);
            p.id_at = IdAt::AfterString(1 + A_STATUS.len());
            preds.push(p);
        }
        if let Some(t) = &query.case_type {
            preds.push(eq_predicate(
                Key::new(P_INDEX).raw(A_TYPE).0,
                &[Key::default().str(t).0],
            ));
        }
    }
    Ok(Plan { preds, post_filter })
}

/// Step 3: runs a plan against the tree: intersects the candidate sets,
/// then loads, filters and sorts the candidates, or walks the sort order's
/// index when there are many (or none bound them).
///
/// Errors: [`QueryError::Damaged`] and storage errors.
pub(super) fn execute(
    rows: &Rows,
    query: &SearchQuery,
    plan: &Plan,
    principal: &Principal,
    restricted: &HashMap<Vec<u8>, BTreeSet<String>>,
) -> Result<Page<CaseSummary>, QueryError> {
    let (preds, post_filter) = (&plan.preds, plan.post_filter);
    let keep = |s: &CaseSummary| {
        principal.may_see(s.classification)
            && (!post_filter
                || (query.case_type.as_ref().is_none_or(|t| *t == s.case_type)
                    && (query.status.is_empty() || query.status.contains(&s.status))))
    };
    // Intersect the candidate sets, most selective first.
    let mut candidates: Option<HashSet<Vec<u8>>> = None;
    for p in preds {
        let mut found = HashSet::new();
        for (from, to) in &p.ranges {
            ids_in_range(
                rows,
                from.clone(),
                to.clone(),
                |k| p.id_at.offset(k),
                &mut found,
                candidates.as_ref(),
                |id, v| p.admits(id, v, restricted),
            )?;
        }
        if found.is_empty() {
            return Ok(Page {
                items: vec![],
                next_offset: None,
                total: Some(0),
            });
        }
        candidates = Some(found);
    }
    if candidates
        .as_ref()
        .is_none_or(|c| c.len() > ORDERED_WALK_OVER)
    {
        return ordered_page(rows, query, candidates.as_ref(), &keep, principal.clearance);
    }
    let mut hits: Vec<CaseSummary> = Vec::new();
    match candidates {
        Some(ids) => {
            for id in ids {
                if let Some(s) = load_summary(rows, &id, principal.clearance)? {
                    if keep(&s) {
                        hits.push(s);
                    }
                }
            }
        }
        None => {
            let start = vec![P_SUMMARY];
            for kv in rows.range(start.clone()..prefix_end(&start)) {
                let (_, v) = kv?;
                let s = decode_summary(&v, principal.clearance)?;
                if keep(&s) {
                    hits.push(s);
                }
            }
        }
    }
    match query.order {
        SearchOrder::OpenedDescending => {
            hits.sort_by(|a, b| (b.opened_at, &b.case_id).cmp(&(a.opened_at, &a.case_id)))
        }
        SearchOrder::OpenedAscending => {
            hits.sort_by(|a, b| (a.opened_at, &a.case_id).cmp(&(b.opened_at, &b.case_id)))
        }
        SearchOrder::UpdatedDescending => {
            hits.sort_by(|a, b| (b.updated_at, &b.case_id).cmp(&(a.updated_at, &a.case_id)))
        }
        SearchOrder::UpdatedAscending => {
            hits.sort_by(|a, b| (a.updated_at, &a.case_id).cmp(&(b.updated_at, &b.case_id)))
        }
        SearchOrder::CaseId => hits.sort_by(|a, b| a.case_id.cmp(&b.case_id)),
    }
    let total = hits.len();
    let more = query.page.offset + query.page.limit < total;
    Ok(page_of(hits, &query.page, more, Some(total)))
}

pub(super) fn check_range(name: &str, r: &TimeRange) -> Result<(), QueryError> {
    if let (Some(a), Some(b)) = (r.from, r.to) {
        if a > b {
            return Err(QueryError::Invalid {
                parameter: name.into(),
                message: "the range starts after it ends".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_list_the_fields_holding_the_word() {
        let mut value = vec![0u8];
        keys::push_str(&mut value, "informant");
        keys::push_str(&mut value, "summary");
        let enc = |f: &str| Key::default().str(f).0;
        assert!(word_in_field(&value, &enc("summary")));
        assert!(word_in_field(&value, &enc("informant")));
        assert!(!word_in_field(&value, &enc("summ")));
        assert!(!word_in_field(&value, &enc("notes")));
        assert!(!word_in_field(&[0u8], &enc("summary")));
        assert!(
            !word_in_field(&[0u8, b'x'], &enc("x")),
            "garbage reads as absent"
        );
    }
    #[test]
    fn a_withheld_field_matches_nothing_of_its_case_and_other_cases_still_match() {
        // "quint" is in suspect_name only; "orchard" in both fields.
        let mut only_suspect = vec![0u8];
        keys::push_str(&mut only_suspect, "suspect_name");
        let mut both = vec![0u8];
        keys::push_str(&mut both, "suspect_name");
        keys::push_str(&mut both, "victim_address");
        let restricted: HashMap<Vec<u8>, BTreeSet<String>> = HashMap::from([(
            b"B-1".to_vec(),
            BTreeSet::from(["suspect_name".to_string()]),
        )]);
        let principal = Principal::new(crate::ids::TenantId::new("kent").unwrap(), "pc-1");
        let any_field = word_predicates("quint", "text", &principal, None)
            .unwrap()
            .remove(0);
        assert!(!any_field.admits(b"B-1", &only_suspect, &restricted));
        assert!(any_field.admits(b"B-1", &both, &restricted));
        assert!(any_field.admits(b"B-2", &only_suspect, &restricted));
        let in_suspect = word_predicates("quint", "text", &principal, Some("suspect_name"))
            .unwrap()
            .remove(0);
        assert!(!in_suspect.admits(b"B-1", &both, &restricted));
        assert!(in_suspect.admits(b"B-2", &both, &restricted));
        let mut equals = eq_predicate(Key::new(P_FIELD).str("burglary").str("suspect_name").0, &[]);
        equals.field = Some("suspect_name".into());
        assert!(!equals.admits(b"B-1", &[0u8], &restricted));
        assert!(equals.admits(b"B-2", &[0u8], &restricted));
        equals.field = Some("victim_address".into());
        assert!(equals.admits(b"B-1", &[0u8], &restricted));
    }
}
