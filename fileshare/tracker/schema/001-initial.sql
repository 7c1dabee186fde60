-- fileshare 0.1.0: accounts and the file index.
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE TABLE IF NOT EXISTS files (
    host TEXT NOT NULL REFERENCES accounts(name),
    fname TEXT NOT NULL,
    size INTEGER NOT NULL,
    root TEXT NOT NULL,
    PRIMARY KEY (host, fname)
);
CREATE INDEX IF NOT EXISTS files_by_name ON files(fname);
