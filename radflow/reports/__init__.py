"""Self-contained HTML reports for studies and models."""
