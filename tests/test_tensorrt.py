"""TensorRT engines and backend: everything that needs no GPU runs here; the GPU path is marked ``gpu``.

The bundle used here is a tiny hand-built chain (encoder, quantizer, prior, scorer) with the real tensor
names, dtypes and dynamic batch axis, written with onnx.helper and run by ONNX Runtime, so the chain logic
is exercised without training a model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_ad.errors import UserError
from edge_ad.export.bundle import load_bundle, write_manifest
from edge_ad.export.opcheck import check_tensorrt_ready
from edge_ad.export.tensorrt import (
    CHAIN,
    GRAPH_INPUTS,
    NO_GPU,
    EngineCache,
    EngineRecord,
    EngineSpec,
    build_bundle_engines,
    calibration_feeds,
    chain_graphs,
    engine_cache_key,
    engine_filename,
    engine_precision,
    has_fp16,
    has_qdq,
    optimization_profile_shapes,
    precision_plan,
    prepare_onnx,
    register_engines,
    resolve_engine,
    tensorrt_gpu_available,
    to_fp16_onnx,
    to_qdq_onnx,
    trt_major,
)
from edge_ad.export.tensorrt.precision import boundary_nodes
from edge_ad.runtime.backends import create_backend

SIZE = 16  # frame side
LAT = 4  # latent side
D = 4  # code dimension
K = 8  # codebook size
GPU = tensorrt_gpu_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="TensorRT/pycuda not installed or no CUDA GPU")


# ---------------------------------------------------------------- a tiny four-graph bundle


def _model(nodes: list, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def encoder_model(rng: np.random.Generator) -> onnx.ModelProto:
    w1 = rng.normal(0, 0.5, (D, 1, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (D, D, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["frames", "w1"], ["c1"], name="/encoder/conv1/Conv", strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="/encoder/relu/Relu"),
        helper.make_node("Conv", ["r1", "w2"], ["z_e"], name="/encoder/conv2/Conv", strides=[2, 2], pads=[1] * 4),
    ]
    return _model(
        nodes,
        [_vi("frames", TensorProto.FLOAT, ["B", 1, SIZE, SIZE])],
        [_vi("z_e", TensorProto.FLOAT, ["B", D, LAT, LAT])],
        [_init("w1", w1), _init("w2", w2)],
    )


def quantizer_model(codebook: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Transpose", ["z_e"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Mul", ["t", "t"], ["tt"]),
        helper.make_node("ReduceSum", ["tt", "last"], ["zz"], keepdims=1),
        helper.make_node("MatMul", ["t", "cb_t"], ["dot"]),
        helper.make_node("Mul", ["dot", "two"], ["dot2"]),
        helper.make_node("Sub", ["zz", "dot2"], ["d0"]),
        helper.make_node("Add", ["d0", "ee"], ["dist"]),
        helper.make_node("ArgMin", ["dist"], ["idx"], axis=-1, keepdims=0),
        helper.make_node("Cast", ["idx"], ["codes"], to=TensorProto.INT32),
        helper.make_node("ReduceMin", ["dist"], ["distance"], axes=[-1], keepdims=0),
        helper.make_node("Gather", ["cb", "codes"], ["q"], axis=0),
        helper.make_node("Transpose", ["q"], ["quantized"], perm=[0, 3, 1, 2]),
    ]
    inits = [
        _init("cb", codebook),
        _init("cb_t", np.ascontiguousarray(codebook.T)),
        _init("ee", (codebook**2).sum(1).astype(np.float32)),
        _init("two", np.array(2.0, np.float32)),
        _init("last", np.array([-1], np.int64)),
    ]
    return _model(
        nodes,
        [_vi("z_e", TensorProto.FLOAT, ["B", D, LAT, LAT])],
        [
            _vi("codes", TensorProto.INT32, ["B", LAT, LAT]),
            _vi("quantized", TensorProto.FLOAT, ["B", D, LAT, LAT]),
            _vi("distance", TensorProto.FLOAT, ["B", LAT, LAT]),
        ],
        inits,
    )


def prior_model(rng: np.random.Generator) -> onnx.ModelProto:
    emb = rng.normal(0, 1, (K, D)).astype(np.float32)
    hidden = rng.normal(0, 0.3, (D, D, 3, 3)).astype(np.float32)
    w = rng.normal(0, 0.3, (K, D, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "codes"], ["e"], axis=0, name="/prior/embed/Gather"),
        helper.make_node("Transpose", ["e"], ["et"], perm=[0, 3, 1, 2], name="/prior/Transpose"),
        helper.make_node("Conv", ["et", "hidden"], ["h"], name="/prior/hidden/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["h"], ["hr"], name="/prior/relu/Relu"),
        helper.make_node("Conv", ["hr", "w"], ["logits"], name="/prior/conv/Conv", pads=[1] * 4),
    ]
    return _model(
        nodes,
        [_vi("codes", TensorProto.INT32, ["B", LAT, LAT])],
        [_vi("logits", TensorProto.FLOAT, ["B", K, LAT, LAT])],
        [_init("emb", emb), _init("hidden", hidden), _init("w", w)],
    )


def scorer_model(rng: np.random.Generator) -> onnx.ModelProto:
    w = rng.normal(0, 0.3, (1, 1, 3, 3)).astype(np.float32)
    scale = float(SIZE // LAT)
    nodes = [
        helper.make_node("LogSoftmax", ["logits"], ["logp"], axis=1),
        helper.make_node("Unsqueeze", ["codes", "ax1"], ["c1"]),
        helper.make_node("Cast", ["c1"], ["c64"], to=TensorProto.INT64),
        helper.make_node("GatherElements", ["logp", "c64"], ["lp"], axis=1),
        helper.make_node("Neg", ["lp"], ["nll"]),
        helper.make_node("Unsqueeze", ["distance", "ax1"], ["dmap"]),
        helper.make_node("Add", ["nll", "dmap"], ["lat"]),
        helper.make_node("Resize", ["lat", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["frames", "w"], ["rec"], name="/decoder/out/Conv", pads=[1] * 4),
        helper.make_node("Sub", ["frames", "rec"], ["res"], name="/ssim/Sub"),
        helper.make_node("Abs", ["res"], ["err"], name="/ssim/Abs"),
        helper.make_node("Add", ["up", "err"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["frame_score"], axes=[1, 2, 3], keepdims=0),
    ]
    inits = [
        _init("ax1", np.array([1], np.int64)),
        _init("scales", np.array([1, 1, scale, scale], np.float32)),
        _init("w", w),
    ]
    return _model(
        nodes,
        [
            _vi("frames", TensorProto.FLOAT, ["B", 1, SIZE, SIZE]),
            _vi("codes", TensorProto.INT32, ["B", LAT, LAT]),
            _vi("distance", TensorProto.FLOAT, ["B", LAT, LAT]),
            _vi("logits", TensorProto.FLOAT, ["B", K, LAT, LAT]),
        ],
        [_vi("anomaly_map", TensorProto.FLOAT, ["B", 1, SIZE, SIZE]), _vi("frame_score", TensorProto.FLOAT, ["B"])],
        inits,
    )


def make_bundle(root: Path, graphs: tuple[str, ...] = CHAIN) -> Path:
    rng = np.random.default_rng(0)
    models = {
        "encoder": encoder_model(rng),
        "quantizer": quantizer_model(rng.normal(0, 1, (K, D)).astype(np.float32)),
        "prior": prior_model(rng),
        "scorer": scorer_model(rng),
    }
    root.mkdir(parents=True)
    for g in graphs:
        onnx.save(models[g], str(root / f"{g}.onnx"))
    manifest = {
        "input": {"size": [SIZE, SIZE], "grayscale": True, "temporal_offsets": [], "channels": 1},
        "calibration": {"threshold": 1.0, "pixel_threshold": 0.5, "map_scale": 4.0},
        "graphs": {g: f"{g}.onnx" for g in graphs},
    }
    write_manifest(root, manifest, [f"{g}.onnx" for g in graphs])
    return root


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("trt") / "bundle")


def frames(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, SIZE, SIZE), dtype=np.float32)


def run_chain_ort(bundle_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    values = {"frames": x}
    for g in CHAIN:
        sess = ort.InferenceSession(str(bundle_dir / f"{g}.onnx"), providers=["CPUExecutionProvider"])
        outs = sess.run(None, {i.name: values[i.name] for i in sess.get_inputs()})
        values.update(zip([o.name for o in sess.get_outputs()], outs, strict=True))
    return values


# ---------------------------------------------------------------- graphs and readiness


def test_tiny_chain_runs_and_is_tensorrt_ready(bundle_dir: Path) -> None:
    out = run_chain_ort(bundle_dir, frames(3))
    assert out["codes"].dtype == np.int32 and out["codes"].shape == (3, LAT, LAT)
    assert out["anomaly_map"].shape == (3, 1, SIZE, SIZE) and out["frame_score"].shape == (3,)
    for g in CHAIN:
        assert check_tensorrt_ready(bundle_dir / f"{g}.onnx", GRAPH_INPUTS[g]) == [], g
    assert chain_graphs(load_bundle(bundle_dir)) == list(CHAIN)


def test_chain_without_quantizer_is_refused(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b", ("encoder", "scorer")))
    with pytest.raises(UserError, match=r"has no quantizer graph\(s\), which the TensorRT chain needs"):
        chain_graphs(bundle)
    assert chain_graphs(load_bundle(make_bundle(tmp_path / "c", ("encoder", "quantizer", "scorer")))) == [
        "encoder",
        "quantizer",
        "scorer",
    ]


# ---------------------------------------------------------------- cache keys

KEY_FIELDS = {
    "onnx_sha256": "ab" * 32,
    "trt_version": "10.3.0.26",
    "compute_capability": "8.6",
    "precision": "fp16",
    "max_batch": 8,
    "opt_batch": 4,
}


def test_cache_key_is_stable() -> None:
    key = engine_cache_key(**KEY_FIELDS)
    assert key == engine_cache_key(**dict(reversed(list(KEY_FIELDS.items()))))
    canonical = json.dumps({"schema": "edge-ad-engine-v1", **KEY_FIELDS}, sort_keys=True, separators=(",", ":"))
    assert key == hashlib.sha256(canonical.encode()).hexdigest()
    assert engine_filename("encoder", key) == f"encoder-{key[:16]}.engine"


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("onnx_sha256", "cd" * 32),
        ("trt_version", "10.3.0.27"),
        ("compute_capability", "8.9"),
        ("precision", "fp32"),
        ("max_batch", 16),
        ("opt_batch", 8),
    ],
)
def test_cache_key_changes_with_each_field(field: str, other: object) -> None:
    assert engine_cache_key(**{**KEY_FIELDS, field: other}) != engine_cache_key(**KEY_FIELDS)


# ---------------------------------------------------------------- precision per TensorRT version


def test_trt_major() -> None:
    assert trt_major("10.3.0.26") == 10
    assert trt_major("11.1.0.106") == 11
    with pytest.raises(UserError, match="cannot read the TensorRT version 'dev'"):
        trt_major("dev")


@pytest.mark.parametrize(
    ("major", "precision", "flags", "clear", "typed", "form"),
    [
        (10, "fp32", (), ("TF32",), False, "as_exported"),
        (10, "fp16", ("FP16",), (), False, "as_exported"),
        (10, "int8", ("INT8",), (), False, "qdq"),
        (11, "fp32", (), ("TF32",), True, "as_exported"),
        (11, "fp16", (), (), True, "fp16"),
        (11, "int8", (), (), True, "qdq"),
    ],
)
def test_precision_plan(major: int, precision: str, flags: tuple, clear: tuple, typed: bool, form: str) -> None:
    plan = precision_plan(precision, major)
    assert (plan.builder_flags, plan.clear_flags, plan.strongly_typed, plan.onnx_form) == (flags, clear, typed, form)


def test_precision_plan_refuses_old_tensorrt_and_unknown_precision() -> None:
    with pytest.raises(UserError, match="TensorRT 8 is not supported"):
        precision_plan("fp16", 8)
    with pytest.raises(UserError, match="unknown precision 'bf16'; choose one of: fp32, fp16, int8"):
        precision_plan("bf16", 10)


def test_quantizer_and_scorer_stay_fp32() -> None:
    assert [engine_precision(g, "int8") for g in CHAIN] == ["int8", "fp32", "int8", "fp32"]
    assert [engine_precision(g, "fp16") for g in CHAIN] == ["fp16", "fp32", "fp16", "fp32"]


def test_profile_shapes() -> None:
    assert optimization_profile_shapes((2, 16, 16), 1, 4, 8) == ((1, 2, 16, 16), (4, 2, 16, 16), (8, 2, 16, 16))
    with pytest.raises(UserError, match="1 <= min <= opt <= max, got 1, 9, 8"):
        optimization_profile_shapes((2, 16, 16), 1, 9, 8)
    with pytest.raises(UserError, match="dynamic axis besides the batch"):
        optimization_profile_shapes((2, -1, 16), 1, 1, 8)
    with pytest.raises(UserError, match="unknown precision"):
        EngineSpec(Path("x.onnx"), precision="fp8")


# ---------------------------------------------------------------- fp16 and Q/DQ graphs


def test_fp16_conversion_keeps_io_and_runs(bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common")
    src = bundle_dir / "encoder.onnx"
    plan = precision_plan("fp16", 11)
    dst = prepare_onnx(src, tmp_path, plan)
    assert dst != src and has_fp16(dst) and not has_fp16(src)
    model = onnx.load(str(dst))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    x = frames(2)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"frames": x})[0]
    half = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"frames": x})[0]
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, ref, rtol=0, atol=2e-2 * np.abs(ref).max())
    assert not np.array_equal(half, ref)  # it really computed in fp16
    assert prepare_onnx(src, tmp_path, precision_plan("fp16", 10)) == src  # TensorRT 10: the flag does it


def test_fp16_conversion_leaves_ssim_nodes_in_fp32(bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common")
    dst = to_fp16_onnx(bundle_dir / "scorer.onnx", tmp_path / "scorer.fp16.onnx")
    model = onnx.load(str(dst))
    casts_to = {
        n.output[0]: next(a.i for a in n.attribute if a.name == "to") for n in model.graph.node if n.op_type == "Cast"
    }
    ssim_sub = next(n for n in model.graph.node if n.name == "/ssim/Sub")
    decoder = next(n for n in model.graph.node if n.name == "/decoder/out/Conv")
    for node in (ssim_sub, decoder):  # blocked nodes are fed fp32 (via casts back) and keep fp32 weights
        for name in node.input:
            assert casts_to.get(name, TensorProto.FLOAT) == TensorProto.FLOAT, (node.name, name)
    weight = next(t for t in model.graph.initializer if t.name == "w")
    assert weight.data_type == TensorProto.FLOAT
    values = run_chain_ort(bundle_dir, frames(2))
    feeds = {k: values[k] for k in ("frames", "codes", "distance", "logits")}
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], values["anomaly_map"], atol=5e-2)


def qdq_test_model() -> onnx.ModelProto:
    """x -> conv -> encoder conv -> decoder conv -> ssim conv -> head conv -> conv -> y: only the encoder and
    head convs may be quantized; the first and last stay float (they touch the graph's input and output)."""
    rng = np.random.default_rng(3)
    inits = [_init(f"w{i}", rng.normal(0, 0.4, (4, 4 if i else 1, 3, 3)).astype(np.float32)) for i in range(5)]
    inits.append(_init("w5", rng.normal(0, 0.4, (1, 4, 3, 3)).astype(np.float32)))
    wiring = [  # name, input, output
        ("/encoder/first/Conv", "x", "a"),
        ("/encoder/conv/Conv", "ar", "b"),
        ("/decoder/conv/Conv", "b", "c"),
        ("/SSIM/window/Conv", "c", "d"),
        ("/head/conv/Conv", "d", "e"),
        ("/head/out/Conv", "e", "y"),
    ]
    nodes = [
        helper.make_node("Conv", [src, f"w{i}"], [dst], name=name, pads=[1] * 4)
        for i, (name, src, dst) in enumerate(wiring)
    ]
    nodes.insert(1, helper.make_node("Relu", ["a"], ["ar"], name="/encoder/relu/Relu"))
    return _model(
        nodes, [_vi("x", TensorProto.FLOAT, ["B", 1, 8, 8])], [_vi("y", TensorProto.FLOAT, ["B", 1, 8, 8])], inits
    )


def test_qdq_quantization_excludes_decoder_and_ssim(tmp_path: Path) -> None:
    src = tmp_path / "small.onnx"
    onnx.save(qdq_test_model(), str(src))
    rng = np.random.default_rng(4)
    feeds = [{"x": rng.random((4, 1, 8, 8), dtype=np.float32)} for _ in range(4)]
    dst = to_qdq_onnx(src, tmp_path / "small.qdq.onnx", feeds)
    assert has_qdq(dst) and not has_qdq(src)
    model = onnx.load(str(dst))
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}

    def fed_by_dq(conv: onnx.NodeProto) -> list[bool]:
        return [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in conv.input[:2]]

    assert fed_by_dq(convs["/encoder/conv/Conv"]) == [True, True]
    assert fed_by_dq(convs["/head/conv/Conv"]) == [True, True]
    for float_conv in ("/decoder/conv/Conv", "/SSIM/window/Conv", "/encoder/first/Conv", "/head/out/Conv"):
        assert not fed_by_dq(convs[float_conv])[1], float_conv  # float weights: the conv runs in float
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(np.all(z == 0) and z.dtype == np.int8 for z in zero_points)  # TensorRT wants 0
    assert check_tensorrt_ready(dst, {"x"}) == []
    x = rng.random((2, 1, 8, 8), dtype=np.float32)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    q = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.corrcoef(q.ravel(), ref.ravel())[0, 1] > 0.98  # a sanity check: the real model's is measured below


def test_boundary_nodes_are_found_through_ops_that_change_no_value() -> None:
    """x -> Cast -> A, D -> Add -> B -> C -> Identity -> y: A and D read the input through a Cast, C writes the
    output through an Identity; B, behind an Add, is inside. (A Gather from an embedding stops the walk: the
    prior_model's first conv above is quantized, tested below.)"""
    rng = np.random.default_rng(5)
    inits = [_init(f"w{i}", rng.normal(0, 0.4, (1, 1, 3, 3)).astype(np.float32)) for i in range(4)]
    conv = lambda name, src, dst, w: helper.make_node("Conv", [src, w], [dst], name=name, pads=[1] * 4)  # noqa: E731
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], name="cast", to=TensorProto.FLOAT),
        conv("A", "xf", "a", "w0"),
        conv("D", "xf", "d", "w3"),
        helper.make_node("Add", ["a", "d"], ["s"], name="add"),
        conv("B", "s", "b", "w1"),
        conv("C", "b", "c", "w2"),
        helper.make_node("Identity", ["c"], ["y"], name="identity"),
    ]
    model = _model(
        nodes, [_vi("x", TensorProto.FLOAT, ["B", 1, 8, 8])], [_vi("y", TensorProto.FLOAT, ["B", 1, 8, 8])], inits
    )
    assert boundary_nodes(model) == ["A", "D", "C"]


def test_int8_without_qdq_or_calibration_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        prepare_onnx(bundle_dir / "encoder.onnx", tmp_path, precision_plan("int8", 10))
    msg = str(err.value)
    assert msg.startswith("INT8 engines need an explicitly quantized (Q/DQ) graph and encoder.onnx has no")
    assert "calibration frames" in msg and "\n" not in msg


def test_int8_prior_calibrated_through_the_chain(bundle_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(bundle_dir)
    x = frames(10)
    feeds = calibration_feeds(bundle, "prior", x)
    assert [list(f) for f in feeds] == [["codes"], ["codes"]]
    assert feeds[0]["codes"].dtype == np.int32 and [len(f["codes"]) for f in feeds] == [8, 2]
    np.testing.assert_array_equal(np.concatenate([f["codes"] for f in feeds]), run_chain_ort(bundle_dir, x)["codes"])
    dst = prepare_onnx(bundle.graph("prior"), tmp_path, precision_plan("int8", 11), feeds)
    assert has_qdq(dst) and check_tensorrt_ready(dst, GRAPH_INPUTS["prior"]) == []
    with pytest.raises(UserError, match=r"calibration frames must be float32 \[N, 1, 16, 16\]"):
        calibration_feeds(bundle, "encoder", np.zeros((2, 3, SIZE, SIZE), np.float32))


# ---------------------------------------------------------------- engine cache and manifest bookkeeping


def fake_records(bundle_dir: Path, version: str, cc: str, cache: EngineCache) -> dict[str, EngineRecord]:
    """Cache entries with opaque stand-in bytes: this code never looks inside an engine file."""
    bundle = load_bundle(bundle_dir)
    records = {}
    for g in CHAIN:
        sha = bundle.manifest["files"][f"{g}.onnx"]["sha256"]
        prec = engine_precision(g, "fp16")
        key = engine_cache_key(sha, version, cc, prec, 8, 8)
        rec = EngineRecord(g, engine_filename(g, key), key, sha, version, cc, prec, 1, 8, 8)
        cache.store(rec, f"engine {g} {version} {cc}".encode())
        records[g] = rec
    return records


def test_engines_registered_and_resolved_per_host(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    shared = EngineCache(tmp_path / "shared-cache")
    register_engines(root, fake_records(root, "10.3.0.26", "8.6", shared), shared.dir)
    bundle = load_bundle(root)  # verifies the engines' checksums too
    entry = bundle.manifest["engines"]["encoder"]
    assert entry["file"].startswith("engines/encoder-") and entry["precision"] == "fp16"
    assert entry["trt_version"] == "10.3.0.26" and entry["compute_capability"] == "8.6" and entry["max_batch"] == 8
    assert bundle.manifest["engines"]["scorer"]["precision"] == "fp32"
    assert bundle.has_file(entry["file"]) and (root / "engines" / "index.json").is_file()

    path, _ = resolve_engine(bundle, "encoder", "10.3.0.26", "8.6")
    assert path.read_bytes() == b"engine encoder 10.3.0.26 8.6"
    with pytest.raises(UserError) as err:
        resolve_engine(bundle, "encoder", "10.3.0.26", "8.9")
    assert str(err.value) == (
        f"the 'encoder' engine in {root} was built for TensorRT 10.3.0.26 on compute capability 8.6, this host "
        "has TensorRT 10.3.0.26 on 8.9; run `edge-ad export --engines` on this host"
    )
    with pytest.raises(UserError, match="for TensorRT 10.3.0.26 .* this host has TensorRT 11.1.0.106"):
        resolve_engine(bundle, "prior", "11.1.0.106", "8.6")

    # A second host builds its own: the manifest points at the new ones, the first host still finds its own.
    register_engines(root, fake_records(root, "11.1.0.106", "8.9", EngineCache(root / "engines")))
    bundle = load_bundle(root)
    assert bundle.manifest["engines"]["encoder"]["trt_version"] == "11.1.0.106"
    assert resolve_engine(bundle, "encoder", "11.1.0.106", "8.9")[0].read_bytes() == b"engine encoder 11.1.0.106 8.9"
    assert resolve_engine(bundle, "encoder", "10.3.0.26", "8.6")[0].read_bytes() == b"engine encoder 10.3.0.26 8.6"


def test_engine_for_a_changed_graph_is_refused(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    register_engines(root, fake_records(root, "10.3.0.26", "8.6", EngineCache(root / "engines")))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["encoder.onnx"]["sha256"] = "0" * 64  # as if the graph had been re-exported
    bundle = load_bundle(root, verify=False)
    bundle.manifest.update(manifest)
    with pytest.raises(UserError, match="'encoder' engine .* was built from another version of the graph; run"):
        resolve_engine(bundle, "encoder", "10.3.0.26", "8.6")
    with pytest.raises(UserError, match="has no TensorRT engine for 'encoder'; run `edge-ad export --engines`"):
        resolve_engine(load_bundle(make_bundle(tmp_path / "c")), "encoder", "10.3.0.26", "8.6")


def test_cache_lookup_needs_the_file_and_a_sane_index(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    rec = EngineRecord("encoder", "encoder-x.engine", "k" * 64, "s", "10.3", "8.6", "fp32", 1, 8, 8)
    cache.store(rec, b"bytes")
    assert cache.lookup("k" * 64) == rec and cache.lookup("j" * 64) is None
    (cache.dir / rec.file).unlink()
    assert cache.lookup("k" * 64) is None
    cache.index_path.write_text("{not json")
    with pytest.raises(UserError, match="corrupt engine index"):
        cache.lookup("k" * 64)


# ---------------------------------------------------------------- no GPU here: one clear line


@pytest.mark.skipif(GPU, reason="this host has a TensorRT GPU")
def test_build_without_gpu_says_so(bundle_dir: Path) -> None:
    with pytest.raises(UserError) as err:
        build_bundle_engines(bundle_dir, "fp16", 4)
    assert str(err.value) == NO_GPU
    assert NO_GPU == (
        "TensorRT engines need an NVIDIA GPU with TensorRT 10 or 11 installed (pip install edge-ad[tensorrt]); "
        "this host has none"
    )
    assert not (bundle_dir / "engines").exists()


@pytest.mark.skipif(GPU, reason="this host has a TensorRT GPU")
def test_backend_without_gpu_says_so(bundle_dir: Path) -> None:
    with pytest.raises(UserError) as err:
        create_backend("tensorrt", load_bundle(bundle_dir))
    assert str(err.value) == NO_GPU


def test_backend_module_imports_without_torch_onnx_or_tensorrt() -> None:
    code = (
        "import sys; import edge_ad.runtime.backends.tensorrt as m; "
        "bad = [x for x in ('torch', 'onnx', 'tensorrt', 'pycuda') if x in sys.modules]; "
        "assert not bad, bad; print(m.TensorRTBackend.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tensorrt"


# ---------------------------------------------------------------- on a GPU host only


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_engines_match_onnxruntime(tmp_path: Path, precision: str) -> None:
    root = make_bundle(tmp_path / "b")
    records = build_bundle_engines(root, precision, max_batch=4, opt_batch=2)
    assert set(records) == set(CHAIN)
    backend = create_backend("tensorrt", load_bundle(root))
    try:
        assert backend.max_batch == 4
        for n in (1, 3, 4):  # batch changes re-shape the contexts
            x = frames(n, seed=n)
            got = backend.infer(x)
            ref = run_chain_ort(root, x)
            tol = 1e-4 if precision == "fp32" else 5e-2
            np.testing.assert_allclose(
                got.maps, ref["anomaly_map"][:, 0], atol=tol * max(1.0, ref["anomaly_map"].max())
            )
            np.testing.assert_allclose(got.scores, ref["frame_score"], atol=tol * max(1.0, ref["frame_score"].max()))
        with pytest.raises(ValueError):
            backend.infer(frames(5))
    finally:
        backend.close()
    again = build_bundle_engines(root, precision, max_batch=4, opt_batch=2)  # cached: same files, no rebuild
    assert {g: r.file for g, r in again.items()} == {g: r.file for g, r in records.items()}


@pytest.mark.gpu
@needs_gpu
def test_gpu_int8_engines_build_from_calibrated_qdq(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    with pytest.raises(UserError, match="explicitly quantized"):
        build_bundle_engines(root, "int8", max_batch=2)
    records = build_bundle_engines(root, "int8", max_batch=2, calibration=frames(16))
    assert [records[g].precision for g in CHAIN] == ["int8", "fp32", "int8", "fp32"]
    backend = create_backend("tensorrt", load_bundle(root))
    try:
        x = frames(2, seed=9)
        got = backend.infer(x)
        assert got.maps.shape == (2, SIZE, SIZE) and np.isfinite(got.maps).all()
    finally:
        backend.close()


def test_fp16_conversion_of_a_float_mask(tmp_path: Path) -> None:
    """A bool mask cast to float inside a converted region (the SSIM/scorer pattern) must stay loadable."""
    pytest.importorskip("onnxconverter_common")
    nodes = [
        helper.make_node("Greater", ["x", "half"], ["gt"]),
        helper.make_node("Cast", ["gt"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "mask"], ["m"]),
        helper.make_node("Mul", ["m", "two"], ["y"]),
    ]
    inits = [_init("half", np.array(0.5, np.float32)), _init("two", np.array(2.0, np.float32))]
    src = tmp_path / "mask.onnx"
    onnx.save(
        _model(nodes, [_vi("x", TensorProto.FLOAT, ["B", 4])], [_vi("y", TensorProto.FLOAT, ["B", 4])], inits), str(src)
    )
    dst = to_fp16_onnx(src, tmp_path / "mask.fp16.onnx")
    x = np.array([[0.1, 0.6, 0.9, 0.4]], np.float32)
    (y,) = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, [[0.0, 1.2, 1.8, 0.0]], atol=2e-3)


def _run_chain(sessions: dict[str, ort.InferenceSession], frames: np.ndarray) -> dict[str, np.ndarray]:
    values = {"frames": frames}
    for sess in sessions.values():
        outputs = sess.run(None, {i.name: values[i.name] for i in sess.get_inputs()})
        values.update(zip([o.name for o in sess.get_outputs()], outputs, strict=True))
    return values


def _clip_channels(bundle, clip) -> np.ndarray:
    from edge_ad.data.preprocess import model_channels

    frames = model_channels(clip.load_frames(), bundle.input_size, bundle.grayscale, bundle.temporal_offsets)
    return np.stack(list(frames)).astype(np.float32)


def test_real_bundle_graphs_are_ready_and_convert(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    """The exported tiny model: chain readiness, fp16 copies that track fp32, an int8 Q/DQ encoder that keeps
    the codes and the frame scores of real footage."""
    pytest.importorskip("onnxconverter_common")
    from scipy.stats import spearmanr

    from edge_ad.data.ucsd import open_ucsd

    bundle = load_bundle(tiny_bundle)
    graphs = chain_graphs(bundle)
    assert graphs[:2] == ["encoder", "quantizer"] and graphs[-1] == "scorer"
    x = np.random.default_rng(5).random((4, bundle.channels, *bundle.input_size), dtype=np.float32)
    sessions = {g: ort.InferenceSession(str(bundle.graph(g)), providers=["CPUExecutionProvider"]) for g in graphs}
    for g in graphs:
        assert check_tensorrt_ready(bundle.graph(g), GRAPH_INPUTS[g]) == [], g
    values = _run_chain(sessions, x)
    assert values["codes"].dtype == np.int32
    for g in graphs:
        if g == "quantizer":
            continue
        half = to_fp16_onnx(bundle.graph(g), tmp_path / f"{g}.fp16.onnx")
        sess = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"])
        for out, got in zip(
            sess.get_outputs(), sess.run(None, {i.name: values[i.name] for i in sess.get_inputs()}), strict=True
        ):
            ref = values[out.name]
            assert got.dtype == ref.dtype
            assert np.abs(got - ref).max() <= 0.02 * max(1.0, np.abs(ref).max()), (g, out.name)
    # INT8: calibrated on a normal training clip, judged on the test clips by what the chain makes of it.
    ds = open_ucsd(tiny_scene)
    normal = _clip_channels(bundle, ds.train[0])[::3]
    test = np.concatenate([_clip_channels(bundle, c) for c in ds.test])
    qdq = prepare_onnx(
        bundle.graph("encoder"), tmp_path, precision_plan("int8", 10), calibration_feeds(bundle, "encoder", normal)
    )
    assert has_qdq(qdq) and check_tensorrt_ready(qdq, GRAPH_INPUTS["encoder"]) == []
    ref = _run_chain(sessions, test)
    got = _run_chain({**sessions, "encoder": ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])}, test)
    # Measured here: 0.96 of the codes kept and a Spearman's rho of 0.99 between the frame scores; with the first
    # and last encoder layers quantized too, 0.45 and 0.82.
    assert (got["codes"] == ref["codes"]).mean() >= 0.9
    assert spearmanr(got["frame_score"], ref["frame_score"])[0] >= 0.95
