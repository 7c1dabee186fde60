-- fileshare 0.1.0: published files, the hash cache and partial downloads.
CREATE TABLE IF NOT EXISTS published (
    fname TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    piece_size INTEGER NOT NULL,
    pieces BLOB NOT NULL,
    root TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hashcache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    piece_size INTEGER NOT NULL,
    pieces BLOB NOT NULL,
    root TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS partial (
    root TEXT PRIMARY KEY,
    fname TEXT NOT NULL,
    size INTEGER NOT NULL,
    piece_size INTEGER NOT NULL,
    pieces BLOB NOT NULL,
    verified BLOB NOT NULL
);
