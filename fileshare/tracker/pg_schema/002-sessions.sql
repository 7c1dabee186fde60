-- fileshare 0.3: session tokens (fileshare/tracker/sessions.py), as SQLite's
-- step 5.  A peer that reconnects presents its last login's token instead of
-- going through the password check; only the token's SHA-256 is kept.
-- 'expires' is Unix time, NULL while the session is online (a tracker that
-- starts gives those a deadline from its start).  One token per account.
CREATE TABLE sessions (
    name text COLLATE "C" PRIMARY KEY REFERENCES accounts (name),
    token_hash text NOT NULL,
    expires double precision
);
