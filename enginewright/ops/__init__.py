"""Running the processes: terminal output, disk checks, server retries, child-process environment, the temporary Prefect server, GPU pools."""
