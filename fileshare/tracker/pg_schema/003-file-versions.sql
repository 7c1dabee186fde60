-- fileshare 0.3: a version number per host's files (fileshare/tracker/index_coherence.py).
-- Every change of a host's rows in 'files' bumps its version by one, in the
-- same transaction (fileshare/tracker/pg_store.py).  Trackers of a group say
-- which version a change made in their file notices, and compare these rows
-- with the versions their index holds at each heartbeat: a tracker that
-- missed a notice re-reads only that host's files.  No row: version 0.
CREATE TABLE file_versions (
    host text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL
);
