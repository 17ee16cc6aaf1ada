"""The enginewright command line, on top of flows, tasks and the core domains."""
