"""PostgreSQL schema steps of the tracker (001-099: the store; 100-: the group of trackers)."""
