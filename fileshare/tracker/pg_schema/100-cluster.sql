-- Several trackers, one group (fileshare.tracker.pg_cluster): who is online where.
-- Idempotent, so it can run at every start until it joins the versioned PostgreSQL schema steps.

-- One row per running tracker; a tracker whose heartbeat is older than the bound is dead.
CREATE TABLE IF NOT EXISTS cluster_trackers (
    id        TEXT PRIMARY KEY,             -- random per process start; also names its NOTIFY channel
    name      TEXT NOT NULL,                -- for people (--tracker-name)
    heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per online account (one session per account across the group).
CREATE TABLE IF NOT EXISTS cluster_sessions (
    name             TEXT PRIMARY KEY,
    tracker          TEXT NOT NULL,        -- cluster_trackers.id of the tracker holding the connection
    session          TEXT NOT NULL,        -- the login's session secret (a reconnect may take it back)
    endpoint         TEXT NOT NULL,
    "where"          TEXT NOT NULL,
    transfer_address TEXT NOT NULL,        -- JSON: what fetchers are told
    fingerprint      TEXT,                 -- sha256:... of the host's TLS key, NULL with --no-tls
    ticket_key       BYTEA NOT NULL,       -- the login's ticket key: any tracker issues tickets for the host
    since            DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS cluster_sessions_by_tracker ON cluster_sessions (tracker);

-- Replies to relayed requests too large for a NOTIFY payload (8000 bytes), read once by the asker.
CREATE TABLE IF NOT EXISTS cluster_replies (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    made TIMESTAMPTZ NOT NULL DEFAULT now()
);
