"""The local stack: the servers every other domain talks to (SeaweedFS, PostgreSQL databases, MLflow, Prefect, the relay)."""
