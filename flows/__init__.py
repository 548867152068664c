"""Prefect flows: compositions of `tasks/`, read like the pipeline's diagram."""
