"""edge-ad: find anomalies in live video from a fixed camera, trained on normal footage only."""

__version__ = "0.1.0"
