"""The telnet-style consoles of the tracker (admin) and the peer (control)."""
