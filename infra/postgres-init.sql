-- Databases of the production stack (infra/compose.yaml); the same names `enginewright stack up` creates.
CREATE DATABASE enginewright_mlflow;
CREATE DATABASE enginewright_prefect;
CREATE DATABASE enginewright_watch;
