-- fileshare 0.2: session tokens (fileshare/tracker/sessions.py).  A peer that
-- reconnects presents its last login's token instead of going through the
-- password check; only the token's SHA-256 is kept.  'expires' is Unix time,
-- NULL while the session is online (a tracker that starts gives those a
-- deadline from its start).  One token per account.
CREATE TABLE sessions (
    name TEXT PRIMARY KEY REFERENCES accounts(name),
    token_hash TEXT NOT NULL,
    expires REAL
);
