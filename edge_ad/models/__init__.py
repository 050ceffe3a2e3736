"""edge_ad.models."""
