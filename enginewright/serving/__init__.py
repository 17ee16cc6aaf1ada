"""Serving a bundle: targets, the runtimes' support table and contracts, rendered configs, fit checks, monitoring, the endpoint client, golden records."""
