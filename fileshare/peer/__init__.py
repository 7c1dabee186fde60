"""The peer: a repository of files, a console, uploads to and downloads from other peers."""
