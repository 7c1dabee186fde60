"""The tracker's PostgreSQL schema: numbered steps (``NNN-name.sql``), applied once each (fileshare.tracker.database)."""
