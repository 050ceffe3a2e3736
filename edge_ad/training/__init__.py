"""edge_ad.training."""
