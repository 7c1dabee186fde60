"""The tracker: accounts, who is online, which host holds which file."""
