"""The web pages and JSON API of the tracker and of a peer (``--web``); see docs/api.rst."""
