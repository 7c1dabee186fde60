"""The tracker database schema: numbered upgrade steps (see fileshare.storage.sqlite)."""
