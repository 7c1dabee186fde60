"""Persistent storage, off the reactor thread."""
