"""raysweep: Ray Tune sweeps and ablations of example-weighting methods, tracked in MLflow."""

__version__ = "0.1.0"
