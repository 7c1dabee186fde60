-- fileshare 0.2: facts about the database itself.  'id' is a random name for
-- this database, also written to the marker file beside it (DB.id), so that a
-- tracker notices when the database it used has been deleted, emptied or
-- swapped (fileshare/tracker/database.py).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('id', lower(hex(randomblob(16))));
