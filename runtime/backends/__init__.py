"""Inference backends behind one interface: ONNX Runtime everywhere, TensorRT on NVIDIA hosts."""

from edge_ad.runtime.backends.base import Backend, InferenceResult, create_backend

__all__ = ["Backend", "InferenceResult", "create_backend"]
