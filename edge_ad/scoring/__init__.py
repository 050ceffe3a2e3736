"""edge_ad.scoring."""
