"""One module per build step: a plain function that does the work, and a thin Prefect task around it."""
