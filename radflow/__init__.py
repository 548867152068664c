"""radflow: scans in object storage -> de-identified volumes, features, models, scores, reports.

The core library. It never imports Prefect: `tasks/` and `flows/` wrap it.
"""

__version__ = "0.1.0"
