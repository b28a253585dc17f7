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
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[(
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
-- waited for the append lock. A command that is refused
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
    head bigint;
    last_recorded bigint;
    stamp bigint;
    actual bigint;
    delay text;
    off int := 0;
    n int;
    appended boolean := false;
    started timestamptz := clock_timestamp();
BEGIN
    IF NOT p_naive THEN
        -- The first lock of every append: commits happen in position order.
        PERFORM pg_advisory_xact_lock(7161393493022436964);
    END IF;
    -- Microseconds spent waiting for the lock, reported on every row.
    lock_wait := (extract(epoch FROM clock_timestamp() - started) * 1000000)::bigint;
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
    FOR i IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        n := p_counts[i];
        IF EXISTS (SELECT 1 FROM cb_events e WHERE e.event_id = ANY (p_ids[off + 1 : off + n])) THEN
            status := 2; first_position := NULL; stream_version := NULL;
            RETURN NEXT;
        ELSE
            SELECT max(e.version) INTO actual FROM cb_events e WHERE e.stream_id = p_streams[i];
            IF (p_expected[i] = -2 AND actual IS NOT NULL)
               OR (p_expected[i] = -3 AND actual IS NULL)
               OR (p_expected[i] >= 0 AND actual IS DISTINCT FROM p_expected[i]) THEN
                status := 1; first_position := NULL; stream_version := actual;
                RETURN NEXT;
            ELSIF p_naive THEN
                INSERT INTO cb_events (position, tenant_id, stream_id, version, event_id,
                                       event_type, recorded, metadata, payload)
                SELECT nextval('cb_naive_position'), p_tenants[i], p_streams[i],
                       coalesce(actual, -1) + k, p_ids[off + k], p_types[off + k], p_recorded,
                       p_metadata[off + k], p_payloads[off + k]
                FROM generate_series(1, n) AS k
                ORDER BY k;
                status := 0;
                first_position := (SELECT min(e.position) FROM cb_events e
                                   WHERE e.event_id = ANY (p_ids[off + 1 : off + n]));
                stream_version := coalesce(actual, -1) + n;
                RETURN NEXT;
            ELSE
                INSERT INTO cb_events (position, tenant_id, stream_id, version, event_id,
                                       event_type, recorded, metadata, payload)
                SELECT head + k, p_tenants[i], p_streams[i], coalesce(actual, -1) + k,
                       p_ids[off + k], p_types[off + k], stamp, p_metadata[off + k],
                       p_payloads[off + k]
                FROM generate_series(1, n) AS k;
                status := 0; first_position := head + 1; stream_version := coalesce(actual, -1) + n;
                RETURN NEXT;
                head := head + n;
                appended := true;
            END IF;
        END IF;
        off := off + n;
    END LOOP;
    IF appended THEN
        PERFORM pg_notify('cb_events', head::text);
    END IF;
END
$fn$;
"#,
)];

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
