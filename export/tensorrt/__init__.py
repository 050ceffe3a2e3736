"""TensorRT engines for a bundle: precision per TensorRT version, the engine cache, building on a GPU host.

Nothing here imports tensorrt, pycuda or onnx at module level; on a CPU host every function that needs no
GPU works, and the ones that do raise one clear ``UserError``.
"""

from edge_ad.export.tensorrt.build import (
    CHAIN,
    GRAPH_INPUTS,
    EngineSpec,
    build_bundle_engines,
    build_engine,
    calibration_feeds,
    chain_graphs,
    optimization_profile_shapes,
)
from edge_ad.export.tensorrt.cache import (
    ENGINES_DIR,
    EngineCache,
    EngineRecord,
    engine_cache_key,
    engine_filename,
    register_engines,
    resolve_engine,
)
from edge_ad.export.tensorrt.device import (
    NO_GPU,
    compute_capability,
    require_tensorrt_gpu,
    tensorrt_gpu_available,
    trt_major,
)
from edge_ad.export.tensorrt.precision import (
    PrecisionPlan,
    engine_precision,
    has_fp16,
    has_qdq,
    precision_plan,
    prepare_onnx,
    to_fp16_onnx,
    to_qdq_onnx,
)

__all__ = [
    "CHAIN",
    "ENGINES_DIR",
    "GRAPH_INPUTS",
    "NO_GPU",
    "EngineCache",
    "EngineRecord",
    "EngineSpec",
    "PrecisionPlan",
    "build_bundle_engines",
    "build_engine",
    "calibration_feeds",
    "chain_graphs",
    "compute_capability",
    "engine_cache_key",
    "engine_filename",
    "engine_precision",
    "has_fp16",
    "has_qdq",
    "optimization_profile_shapes",
    "precision_plan",
    "prepare_onnx",
    "register_engines",
    "require_tensorrt_gpu",
    "resolve_engine",
    "tensorrt_gpu_available",
    "to_fp16_onnx",
    "to_qdq_onnx",
    "trt_major",
]
