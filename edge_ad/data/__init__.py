"""edge_ad.data."""
