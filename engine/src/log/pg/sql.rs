//! Every SQL statement the PostgreSQL store runs, and its versioned schema migrations.
//!
//! The schema is applied at open, one migration per transaction, under a
//! session advisory lock so that nodes starting together apply each once.
//! A database whose schema is newer than this build is refused.

/// The advisory lock key every append transaction takes first
/// (`pg_advisory_xact_lock`): appends are serialised, so positions are
/// strictly increasing in commit order. Chosen to be unlikely to clash with
/// another application's keys ("cbappend" in ASCII). Written into
/// `cb_append` as a literal; a test checks they agree.
#[cfg(test)]
pub(crate) const APPEND_LOCK_KEY: i64 = 0x6362_6170_7065_6e64;

/// The advisory lock key held (session level) while migrations run.
pub(crate) const MIGRATION_LOCK_KEY: i64 = 0x6362_6d69_6772_6174;

/// The channel `cb_append` notifies with the new head position after a
/// commit. A doorbell only: readers re-read the table.
pub(crate) const CHANNEL: &str = "cb_events";

/// The migrations, in order; the version of each is its index plus one.
/// Never edit one that has shipped: add another.
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[
    (
        "events table, append function",
        r#"
CREATE TABLE cb_meta (
    key text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE cb_events (
    position bigint PRIMARY KEY,
    tenant_id text NOT NULL,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    recorded bigint NOT NULL,
    metadata bytea NOT NULL,
    payload bytea NOT NULL,
    CONSTRAINT cb_events_stream_version UNIQUE (stream_id, version),
    CONSTRAINT cb_events_event_id UNIQUE (event_id)
);
CREATE INDEX cb_events_tenant_position ON cb_events (tenant_id, position);

-- Used only by the deliberately unsafe append order the ordering tests
-- run against (p_naive): positions taken at insert, visible at commit.
CREATE SEQUENCE cb_naive_position MINVALUE 0 START WITH 0;

-- Appends a batch of commands in one transaction. Per command: the
-- stream, its tenant, the expected version (-1 any, -2 no stream,
-- -3 stream exists, else exact) and how many of the flattened event
-- arrays are its own. Returns one row per command: status 0 appended
-- (first position, new version), 1 wrong expected version (actual
-- version or NULL), 2 some of its event ids are stored already (the
-- caller decides whether it is a retry), with the microseconds the call
-- waited for the append lock. Set-based: one lookup of the stored ids
-- and one of the streams' heads for the whole batch, the decisions in
-- memory, one INSERT of every accepted event. A command that is refused
-- appends nothing and does not abort the others.
CREATE FUNCTION cb_append(
    p_streams text[],
    p_tenants text[],
    p_expected bigint[],
    p_counts int[],
    p_ids uuid[],
    p_types text[],
    p_metadata bytea[],
    p_payloads bytea[],
    p_recorded bigint,
    p_naive boolean
) RETURNS TABLE (status int, first_position bigint, stream_version bigint, lock_wait bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    waited bigint;
    head bigint;
    last_recorded bigint;
    stamp bigint;
    delay text;
    stored int[];
    names text[];
    heads bigint[];
    statuses int[] := '{}';
    firsts bigint[] := '{}';
    versions bigint[] := '{}';
    acc_cmd int[] := '{}';
    acc_pos bigint[] := '{}';
    acc_ver bigint[] := '{}';
    acc_off int[] := '{}';
    off int := 0;
    n int;
    slot int;
    actual bigint;
    expected bigint;
BEGIN
    IF NOT p_naive THEN
        -- The first lock of every append: commits happen in position order.
        PERFORM pg_advisory_xact_lock(7161393493022436964);
    END IF;
    waited := (extract(epoch FROM clock_timestamp() - started) * 1000000)::bigint;
    -- Test-only: a random pause inside the transaction (ordering tests).
    delay := current_setting('casebook.test_append_delay_ms', true);
    IF delay IS NOT NULL AND delay <> '' AND delay <> '0' THEN
        PERFORM pg_sleep(random() * delay::float8 / 1000.0);
    END IF;
    SELECT e.position, e.recorded INTO head, last_recorded
        FROM cb_events e ORDER BY e.position DESC LIMIT 1;
    IF head IS NULL THEN
        head := -1;
        last_recorded := p_recorded;
    END IF;
    -- Recorded times never go backwards in log order, whatever the
    -- clocks of the nodes say.
    stamp := greatest(p_recorded, last_recorded);
    -- One lookup each for the whole batch: the events whose ids are
    -- stored already, and the head version of every stream named.
    SELECT array_agg(u.ord::int) INTO stored
        FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
        JOIN cb_events e ON e.event_id = u.id;
    SELECT array_agg(s.name), array_agg(
               (SELECT max(e.version) FROM cb_events e WHERE e.stream_id = s.name))
        INTO names, heads
        FROM (SELECT DISTINCT unnest(p_streams) AS name) s;
    -- Decide each command in order; earlier commands of the batch move
    -- their stream's head for the later ones.
    FOR i IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        n := p_counts[i];
        slot := array_position(names, p_streams[i]);
        actual := heads[slot];
        expected := p_expected[i];
        IF stored IS NOT NULL AND EXISTS (
               SELECT 1 FROM unnest(stored) AS x WHERE x > off AND x <= off + n) THEN
            statuses := statuses || 2; firsts := firsts || NULL::bigint;
            versions := versions || NULL::bigint;
        ELSIF (expected = -2 AND actual IS NOT NULL)
           OR (expected = -3 AND actual IS NULL)
           OR (expected >= 0 AND actual IS DISTINCT FROM expected) THEN
            statuses := statuses || 1; firsts := firsts || NULL::bigint;
            versions := versions || actual;
        ELSE
            acc_cmd := acc_cmd || i; acc_pos := acc_pos || head;
            acc_ver := acc_ver || coalesce(actual, -1); acc_off := acc_off || off;
            statuses := statuses || 0; firsts := firsts || (head + 1);
            versions := versions || (coalesce(actual, -1) + n);
            heads[slot] := coalesce(actual, -1) + n;
            head := head + n;
        END IF;
        off := off + n;
    END LOOP;
    IF array_length(acc_cmd, 1) > 0 THEN
        INSERT INTO cb_events (position, tenant_id, stream_id, version, event_id,
                               event_type, recorded, metadata, payload)
        SELECT CASE WHEN p_naive THEN nextval('cb_naive_position') ELSE a.pos + k END,
               p_tenants[a.cmd], p_streams[a.cmd], a.ver + k, p_ids[a.off + k],
               p_types[a.off + k], stamp, p_metadata[a.off + k], p_payloads[a.off + k]
        FROM unnest(acc_cmd, acc_pos, acc_ver, acc_off) AS a(cmd, pos, ver, off),
             generate_series(1, p_counts[a.cmd]) AS k
        ORDER BY a.pos, k;
        IF NOT p_naive THEN
            PERFORM pg_notify('cb_events', head::text);
        END IF;
    END IF;
    RETURN QUERY SELECT r.s, r.f, r.v, waited
        FROM unnest(statuses, firsts, versions) WITH ORDINALITY AS r(s, f, v, i)
        ORDER BY r.i;
END
$fn$;
"#,
    ),
    (
        "data keys of crypto-shredding",
        r#"
-- Each tenant's key (KEK) and its subjects' data keys, wrapped under it
-- (records::pg_kms). A destroyed key keeps only its tombstone: the
-- erasure certificate's reference.
CREATE TABLE cb_kms_tenant_keys (
    tenant_id text PRIMARY KEY,
    kek bytea NOT NULL
);
CREATE TABLE cb_kms_data_keys (
    tenant_id text NOT NULL,
    key_id text NOT NULL,
    wrapped bytea,
    certificate text,
    PRIMARY KEY (tenant_id, key_id)
);
"#,
    ),
];

/// Creates the migrations table if needed (run under the migration lock).
pub(crate) const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS cb_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())";

pub(crate) const APPLIED_VERSION: &str = "SELECT coalesce(max(version), 0) FROM cb_migrations";

pub(crate) const RECORD_MIGRATION: &str =
    "INSERT INTO cb_migrations (version, name) VALUES ($1, $2)";

pub(crate) const APPEND: &str =
    "SELECT status, first_position, stream_version, lock_wait FROM cb_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const COLUMNS: &str =
    "position, stream_id, version, event_id, event_type, recorded, metadata, payload";

pub(crate) fn read_forward() -> String {
    format!(
        "SELECT {COLUMNS} FROM cb_events WHERE stream_id = $1 AND version >= $2 \
         ORDER BY version LIMIT $3"
    )
}

pub(crate) fn read_backward() -> String {
    format!(
        "SELECT {COLUMNS} FROM cb_events WHERE stream_id = $1 AND version <= $2 \
         ORDER BY version DESC LIMIT $3"
    )
}

pub(crate) fn read_all() -> String {
    format!(
        "SELECT {COLUMNS} FROM cb_events WHERE tenant_id = $1 AND position >= $2 \
         ORDER BY position LIMIT $3"
    )
}

pub(crate) fn read_by_ids() -> String {
    format!("SELECT {COLUMNS} FROM cb_events WHERE event_id = ANY ($1)")
}

pub(crate) const STREAM_VERSION: &str = "SELECT max(version) FROM cb_events WHERE stream_id = $1";

/// Stores `$2` under `$1` unless a value is there, and returns the value
/// there (one statement: two nodes asking at once get the same).
pub(crate) const SHARED_SECRET: &str = "WITH made AS (
        INSERT INTO cb_meta (key, value) VALUES ($1, $2)
        ON CONFLICT (key) DO NOTHING RETURNING value)
    SELECT value FROM made UNION ALL SELECT value FROM cb_meta WHERE key = $1 LIMIT 1";

pub(crate) const HEAD: &str = "SELECT max(position) FROM cb_events";

pub(crate) const FIRST_EVENT: &str = "SELECT event_id FROM cb_events ORDER BY position LIMIT 1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_in_the_function_is_the_constant() {
        assert!(MIGRATIONS[0]
            .1
            .contains(&format!("pg_advisory_xact_lock({APPEND_LOCK_KEY})")));
        assert!(MIGRATIONS[0].1.contains(&format!("pg_notify('{CHANNEL}'")));
    }
}
