"""The tracker's PostgreSQL schema: numbered steps (``NNN-name.sql``), applied once each (001-099: the store; 100-: the group of trackers)."""
