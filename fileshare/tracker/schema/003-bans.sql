-- fileshare 0.2: accounts banned by the tracker's operator (admin console
-- 'ban NAME [REASON]', 'unban NAME').  A banned account keeps its files in
-- the index and its password; it just cannot log in.  'since' is Unix time.
CREATE TABLE bans (
    name TEXT PRIMARY KEY REFERENCES accounts(name),
    reason TEXT NOT NULL,
    since REAL NOT NULL
);
