"""edge_ad.evaluation."""
