"""Stand-ins for what this machine cannot run; each cites the real source it follows (see README.md)."""
