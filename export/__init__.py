"""edge_ad.export: ONNX graphs, parity checks, TensorRT engines and the model bundle.

Only ``bundle`` is imported by the runtime; the exporters import torch and are loaded by ``edge-ad export``.
"""
