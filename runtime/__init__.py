"""edge_ad.runtime: sources, backends, the streaming pipeline, alerts, ZeroMQ and Prometheus metrics.

Never imports torch: an edge box installs the base package and runs a bundle.
"""
