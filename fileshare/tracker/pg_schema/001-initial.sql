-- fileshare 0.3: the tracker's accounts, file index and bans in PostgreSQL
-- (fileshare/tracker/pg_store.py).  Every text column that is compared or
-- sorted uses COLLATE "C": names sort by code point whatever the database's
-- locale, as search pages and listings promise (and SQLite does).
CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
-- A random name for this database, like the SQLite database's (step 2 there).
INSERT INTO meta (key, value) VALUES ('id', replace(gen_random_uuid()::text, '-', ''));
CREATE TABLE accounts (
    name text COLLATE "C" PRIMARY KEY,
    password_hash text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE files (
    host text COLLATE "C" NOT NULL REFERENCES accounts (name),
    fname text COLLATE "C" NOT NULL,
    size bigint NOT NULL,
    root text COLLATE "C" NOT NULL,
    PRIMARY KEY (host, fname)
);
-- search pages by (fname, root), and sources look names up: both use this index.
CREATE INDEX files_by_name_root ON files (fname, root);
-- Accounts the operator banned; 'since' is Unix time.
CREATE TABLE bans (
    name text COLLATE "C" PRIMARY KEY REFERENCES accounts (name),
    reason text NOT NULL,
    since double precision NOT NULL
);
