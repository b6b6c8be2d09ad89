"""What comes out of a finished sweep, from MLflow alone: the seed-averaged table, the report, the summary
runs and headline, and the MLflow UI on the comparison view.

- ``report``: tables, plots and importance written to a folder and logged back to the parent run;
- ``summaries``: one seed-averaged summary run per configuration, and the headline;
- ``ui``: ``raysweep ui``, the MLflow UI's process group on 127.0.0.1.

The tables and statistics themselves are :mod:`analysis` (which imports nothing of raysweep).
"""

from raysweep._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "build_report": "report", "sweep_table": "report", "summarize_sweep": "summaries", "serve_ui": "ui",
})
