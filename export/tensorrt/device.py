"""Is there a TensorRT + CUDA GPU here? One answer, one message, shared by the engine builder and the backend.

TensorRT and pycuda are imported inside the functions: on a CPU host they are absent, and everything else
in edge-ad must still import and run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from edge_ad.errors import UserError

NO_GPU = (
    "TensorRT engines need an NVIDIA GPU with TensorRT 10 or 11 installed (pip install edge-ad[tensorrt]); "
    "this host has none"
)
SUPPORTED_MAJORS = (10, 11)


def trt_major(version: str) -> int:
    """10 for "10.3.0.26": the builder API forks on it (TensorRT 11 dropped the precision flags)."""
    match = re.match(r"\s*(\d+)\.", str(version))
    if not match:
        raise UserError(f"cannot read the TensorRT version '{version}' (expected e.g. 10.3.0)")
    return int(match.group(1))


def require_tensorrt_gpu(device: int = 0) -> tuple[ModuleType, ModuleType]:
    """(tensorrt, pycuda.driver), initialised, or ``UserError(NO_GPU)`` when either or the GPU is missing."""
    try:
        import pycuda.driver as cuda
        import tensorrt as trt

        cuda.init()
        count = cuda.Device.count()
    except Exception:  # ImportError, OSError for a missing libcuda, pycuda's own errors for no driver/device
        raise UserError(NO_GPU) from None
    if count < 1:
        raise UserError(NO_GPU)
    if not 0 <= device < count:
        raise UserError(f"CUDA device {device} does not exist; this host has {count} (0..{count - 1})")
    major = trt_major(trt.__version__)
    if major < SUPPORTED_MAJORS[0]:
        raise UserError(
            f"TensorRT {trt.__version__} is installed; edge-ad builds engines with TensorRT 10 or 11 "
            "(pip install edge-ad[tensorrt])"
        )
    return trt, cuda


def compute_capability(cuda: ModuleType, device: int = 0) -> str:
    """ "8.6" for an RTX 30xx: engines only run on the compute capability they were built for."""
    major, minor = cuda.Device(device).compute_capability()
    return f"{major}.{minor}"


def tensorrt_gpu_available(device: int = 0) -> bool:
    try:
        require_tensorrt_gpu(device)
    except UserError:
        return False
    return True


@contextmanager
def primary_context(cuda: ModuleType, device: int = 0) -> Iterator[object]:
    """Make ``device``'s primary CUDA context current on this thread (TensorRT's runtime API uses it)."""
    ctx = cuda.Device(device).retain_primary_context()
    ctx.push()
    try:
        yield ctx
    finally:
        cuda.Context.pop()
        ctx.detach()
