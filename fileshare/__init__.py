"""fileshare: peer-to-peer file sharing for a class, a lab or an office, on Twisted."""

__version__ = "0.1.0"
