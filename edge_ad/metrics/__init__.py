"""edge_ad.metrics."""
