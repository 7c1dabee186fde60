"""The peer repository database schema: numbered upgrade steps (see fileshare.storage.sqlite)."""
