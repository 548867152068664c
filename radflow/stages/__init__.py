"""Stage functions: store keys in, store keys out.

Each one is what a Prefect task calls, and what a test calls directly: it computes its
output's content address, returns it at once if the lake already holds it, and otherwise
computes, writes, and commits (a manifest written last marks a multi-object output complete).
"""
