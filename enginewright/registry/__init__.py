"""The MLflow registry and what answers it: the client, the store database, the watch list, promotion, events, webhooks, relays, pulls."""
