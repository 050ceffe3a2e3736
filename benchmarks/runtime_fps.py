"""Runtime throughput: end-to-end frames/s and latency through the real pipeline, and the FLOP/s the model reaches.

    python -m benchmarks.runtime_fps --bundle BUNDLE [--batch 1 8] [--frames 300] [--video FILE]

For each batch size a synthetic UCSD-sized clip (238x158 gray PNGs), or the first frames of ``--video`` (a
camera's recording: its decoding and resizing are then part of the figure), is replayed at pace max through the
whole ``edge-ad run`` pipeline with the ONNX Runtime backend: decode, preprocessing, micro-batching,
inference, alert state, ZeroMQ. A real subscriber measures each frame's latency from capture to receipt.
At pace max the queue is always full, so the latency is that of a saturated runtime (queueing included);
frames/s is the sustained rate. The model's FLOPs are counted from the ONNX graph (Conv, ConvTranspose,
MatMul, Gemm; tensor shapes from one ONNX Runtime pass) and set against a float32 1024x1024 matrix product timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import zmq

CLIP_HW = (158, 238)  # UCSD Ped1's frame size


def write_clip(folder: Path, frames: int, hw: tuple[int, int] = CLIP_HW, seed: int = 0) -> Path:
    """A static noisy background with a few moving blocks: enough motion to exercise every stage."""
    rng = np.random.default_rng(seed)
    h, w = hw
    background = rng.integers(60, 140, (h, w), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        f = background.copy()
        for k in range(3):
            x = (7 * i + 60 * k) % (w - 16)
            y = (20 + 45 * k) % (h - 16)
            f[y : y + 16, x : x + 12] = 220
        cv2.imwrite(str(folder / f"{i + 1:04d}.png"), f)
    return folder


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best-of float32 n x n matrix product rate (numpy's BLAS, all cores): the roofline to compare against."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def tensor_shapes(model: Any, names: list[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Shapes of intermediate tensors at batch 1, from one ONNX Runtime pass with those tensors made outputs.

    Static shape inference stops at the Shape/Reshape arithmetic of a real graph (the prior, the restoration
    loop); running the graph once knows every shape exactly.
    """
    import onnx

    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros(input_shape, np.float32)}
    return {name: value.shape for name, value in zip(names, session.run(names, feed), strict=True)}


def model_flops(onnx_path: Path, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """FLOPs of one frame (batch 1) in the graph's Conv/ConvTranspose/MatMul/Gemm nodes; needs `onnx`."""
    import onnx

    model = onnx.load(str(onnx_path))
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in COUNTED_OPS]
    names = list(dict.fromkeys(x for n in nodes for x in (n.input[0], n.input[1], n.output[0]) if x not in weights))
    shapes = {**tensor_shapes(model, names, input_shape), **weights}
    total = 0.0
    for node in nodes:
        a, b, out = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        if node.op_type == "Conv":  # W [Cout, Cin/g, kh, kw], out [N, Cout, Ho, Wo]
            total += 2.0 * np.prod(out) * np.prod(b[1:])
        elif node.op_type == "ConvTranspose":  # W [Cin, Cout/g, kh, kw], in [N, Cin, Hi, Wi]
            total += 2.0 * np.prod(a) * np.prod(b[1:])
        elif node.op_type == "MatMul":
            total += 2.0 * np.prod(out) * a[-1]
        else:
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            total += 2.0 * np.prod(out) * (a[0] if trans_a else a[-1])
    nested = sum(
        1
        for n in model.graph.node
        for at in n.attribute
        if at.type == onnx.AttributeProto.GRAPH
        for inner in at.g.node
        if inner.op_type in COUNTED_OPS
    )
    return {"gflop_per_frame": total / 1e9, "nodes": len(nodes), "nodes_in_subgraphs_not_counted": nested}


def _receive_maps(endpoint: str, expected: int, received: list[tuple[float, float]], ready: threading.Event) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt_string(zmq.SUBSCRIBE, "map.")
    sock.connect(endpoint)
    ready.set()
    try:
        while len(received) < expected and sock.poll(30_000):
            _, header, _ = sock.recv_multipart()
            received.append((json.loads(header)["ts_capture"], time.time()))
    finally:
        sock.close(linger=0)
        ctx.term()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_run(
    bundle: Any, batch: int, clip: Path, frames: int, journal: Path, kind: str = "frames"
) -> dict[str, Any]:
    """One replay of ``clip`` through ``Runtime`` at pace max; fps and latency seen by a real subscriber."""
    from edge_ad.config import RuntimeConfig, StreamConfig
    from edge_ad.runtime.pipeline import Runtime

    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    cfg = RuntimeConfig(
        endpoint=endpoint,
        metrics_port=0,
        max_batch=batch,
        queue_size=max(16, 2 * batch),
        journal_dir=str(journal),
        pace="max",
        status_every_s=3600,
        wait_subscribers=1,
        sndhwm=100_000,
    )
    cfg.alerts.threshold = 1e30  # alerts are rare events, not part of the sustained load
    runtime = Runtime(bundle, cfg, [StreamConfig(name="bench", source=str(clip), kind=kind)], max_frames=frames)
    received: list[tuple[float, float]] = []
    ready = threading.Event()
    sub = threading.Thread(target=_receive_maps, args=(endpoint, frames, received, ready), daemon=True)
    sub.start()
    ready.wait()
    runtime.run(status=lambda line: None)
    sub.join(timeout=30)
    if len(received) < frames:
        raise RuntimeError(f"the subscriber got {len(received)} of {frames} maps")
    latencies = np.array([r - c for c, r in received]) * 1000.0
    wall = received[-1][1] - received[0][0]
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"frames": frames, "fps": frames / wall, "latency_ms": {"p50": p50, "p95": p95, "p99": p99}}


def inference_fps(backend: Any, channels: int, hw: tuple[int, int], batch: int, seconds: float = 1.5) -> float:
    """Bare backend rate at this batch size, for the model's own FLOP/s without the pipeline around it."""
    x = np.random.default_rng(0).random((batch, channels, *hw), dtype=np.float32)
    backend.infer(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        backend.infer(x)
        n += batch
    return n / (time.perf_counter() - t0)


def run_benchmark(
    bundle: str | Path, batches: list[int] | tuple[int, ...] = (1, 8), frames: int = 300, video: str | None = None
) -> dict:
    """Measure the runtime on this machine; returns every figure plus the command that reproduces it."""
    from edge_ad.export.bundle import load_bundle
    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend

    b = load_bundle(bundle)
    try:
        flops: dict[str, Any] = model_flops(b.graph("pipeline"), (1, b.channels, *b.input_size))
    except ImportError:
        flops = {"gflop_per_frame": None, "note": "install the onnx package to count FLOPs"}
    result: dict[str, Any] = {
        "bundle": str(b.path),
        "input": {"size": list(b.input_size), "channels": b.channels},
        "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "matmul_gflops": matmul_gflops(),
        "model": flops,
        "batches": {},
        "command": f"python -m benchmarks.runtime_fps --bundle {bundle} --batch {' '.join(map(str, batches))} "
        f"--frames {frames}" + (f" --video {video}" if video else ""),
    }
    with tempfile.TemporaryDirectory(prefix="edge-ad-bench-") as tmp:
        if video:
            clip, kind = _recording(video, frames, b.fps), "video"
            result["video"] = str(clip)
        else:
            clip, kind = write_clip(Path(tmp) / "clip", frames), "frames"
        for batch in batches:
            run = pipeline_run(b, batch, clip, frames, Path(tmp) / f"journal{batch}", kind)
            backend = OnnxRuntimeBackend(b, max_batch=batch)
            run["inference_fps"] = inference_fps(backend, b.channels, b.input_size, batch)
            backend.close()
            gflop = flops.get("gflop_per_frame")
            if gflop:
                run["gflops_pipeline"] = gflop * run["fps"]
                run["gflops_inference"] = gflop * run["inference_fps"]
                run["share_of_matmul"] = run["gflops_inference"] / result["matmul_gflops"]
            result["batches"][batch] = run
    return result


def _recording(video: str, frames: int, rate: float | None) -> Path:
    """A recording long enough for ``frames`` maps at the model's rate (a faster file's extra frames are read
    and decimated, as live), or a clear error."""
    from edge_ad.data.video import video_info
    from edge_ad.errors import UserError

    info = video_info(video)
    scored = info.frame_count * min(1.0, (rate or info.fps) / info.fps) if info.fps else info.frame_count
    if info.frame_count and scored < frames:  # a container that does not count its frames is taken at its word
        raise UserError(f"{video} gives about {scored:.0f} frames at the model's rate; ask for fewer with --frames")
    return info.path


def report(result: dict) -> str:
    lines = [
        f"bundle {result['bundle']} (input {result['input']['channels']}x"
        f"{result['input']['size'][0]}x{result['input']['size'][1]}), onnxruntime {result['onnxruntime']}, "
        f"{result['cpu_count']} cores" + (f"; replaying {result['video']}" if "video" in result else ""),
        f"float32 1024x1024 matmul: {result['matmul_gflops']:.1f} GFLOP/s",
    ]
    gflop = result["model"].get("gflop_per_frame")
    if gflop:
        lines.append(f"model: {gflop * 1000:.2f} MFLOP per frame (Conv/ConvTranspose/MatMul/Gemm)")
    for batch, run in result["batches"].items():
        lat = run["latency_ms"]
        line = (
            f"batch {batch}: {run['fps']:.1f} frames/s end to end, latency p50 {lat['p50']:.1f} ms "
            f"p95 {lat['p95']:.1f} ms p99 {lat['p99']:.1f} ms (saturated); bare inference {run['inference_fps']:.1f} "
            "frames/s"
        )
        if "gflops_inference" in run:
            line += (
                f"; model {run['gflops_pipeline']:.2f} GFLOP/s in the pipeline, {run['gflops_inference']:.2f} "
                f"GFLOP/s bare ({100 * run['share_of_matmul']:.0f}% of matmul)"
            )
        lines.append(line)
    lines.append(f"reproduce: {result['command']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle directory (edge-ad export)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="max batch sizes to measure")
    parser.add_argument("--frames", type=int, default=300, help="frames per replay")
    parser.add_argument("--video", help="replay this recording instead of a synthetic clip")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (summary on stderr)")
    args = parser.parse_args(argv)
    from edge_ad.errors import UserError

    try:
        result = run_benchmark(args.bundle, args.batch, args.frames, args.video)
    except UserError as e:
        print(f"edge-ad: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    if args.json:  # the figures on stdout for programs, the summary on stderr for people
        print(json.dumps(result, indent=2, default=float))
        print(report(result), file=sys.stderr)
    else:
        print(report(result))


if __name__ == "__main__":
    main()
