"""Thin Prefect tasks: each resolves settings and the store, calls one stage function of
`radflow.stages`, and declares its cache key: the content address of its output."""
