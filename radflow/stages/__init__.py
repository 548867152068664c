"""Stage functions: lake keys in, a lake key out.

Each one is what a Prefect task calls, and what a test calls directly: it computes its
output's content address, returns it at once if the lake already holds it, and otherwise
computes, writes through `radflow.lake.Lake`, and commits (the object written last marks a
multi-object output complete). A stage reads other stages' outputs only through the lake's
typed records, never by importing another stage.

The per-study stages (`anonymize`, `preprocess`, `features`, `score`, `report`) also share
one descriptor, from which `tasks.stage_task` derives their tasks: `NAME` (the task, its run
names, its `stage:` tag and its quarantine folder), `address(settings, *keys)` and
`run(lake, settings, *keys)`, the keys in the same order in both.
"""
