"""TensorRT readiness of ONNX graphs, on small graphs built with onnx.helper and checked as TensorRT 10 would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_ad.errors import UserError
from edge_ad.export.opcheck import (
    MAX_OPSET,
    assert_tensorrt_ready,
    check_tensorrt_ready,
    control_flow_warnings,
    supported_ops,
)


def conv_model(
    *,
    opset: int = 17,
    x_shape: list = ("B", 1, 8, 8),
    extra_nodes: list | None = None,
    extra_inputs: list | None = None,
    outputs: list | None = None,
) -> onnx.ModelProto:
    """x [B,1,8,8] -> Conv -> Relu -> y [B,2,8,8], plus whatever a test adds."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="/enc/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="/enc/Relu"),
        *(extra_nodes or []),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape)), *(extra_inputs or [])],
        outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 2, 8, 8])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_supported_list_is_the_tensorrt10_matrix() -> None:
    ops = supported_ops()
    assert len(ops) == 150
    assert {"Conv", "ConvTranspose", "ArgMin", "GatherElements", "QuantizeLinear", "Resize"} <= ops
    assert not {"Unique", "SplitToSequence", "Bernoulli", "ConvInteger"} & ops


def test_supported_graph_is_ready() -> None:
    model = conv_model()
    onnx.checker.check_model(model, full_check=True)
    assert check_tensorrt_ready(model, expected_inputs={"x"}) == []
    assert_tensorrt_ready(model, expected_inputs={"x"})


def test_random_operator_is_refused() -> None:
    noise = helper.make_node("RandomNormalLike", ["y"], ["n"], name="/noise")
    add = helper.make_node("Add", ["y", "n"], ["z"])
    model = conv_model(
        extra_nodes=[noise, add], outputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 2, 8, 8])]
    )
    (problem,) = check_tensorrt_ready(model)
    assert problem.startswith("random operator(s) RandomNormalLike: TensorRT ignores their seed")


def test_int64_output_is_refused() -> None:
    argmax = helper.make_node("ArgMax", ["y"], ["idx"], axis=1, keepdims=0)
    model = conv_model(
        extra_nodes=[argmax], outputs=[helper.make_tensor_value_info("idx", TensorProto.INT64, ["B", 8, 8])]
    )
    assert check_tensorrt_ready(model) == ["output 'idx' is int64; make it int32 (cast in the model before export)"]
    cast = helper.make_node("Cast", ["idx"], ["idx32"], to=TensorProto.INT32)
    fixed = conv_model(
        extra_nodes=[argmax, cast], outputs=[helper.make_tensor_value_info("idx32", TensorProto.INT32, ["B", 8, 8])]
    )
    assert check_tensorrt_ready(fixed) == []


def test_opset_21_is_refused() -> None:
    problems = check_tensorrt_ready(conv_model(opset=21))
    assert problems == [
        f"opset 21 is newer than TensorRT 10 parses (at most {MAX_OPSET}); export with export.opset <= {MAX_OPSET}"
    ]
    assert check_tensorrt_ready(conv_model(opset=20)) == []


def test_dynamic_spatial_axis_is_refused() -> None:
    model = conv_model(
        x_shape=["B", 1, "H", 8], outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 2, "H", 8])]
    )
    problems = check_tensorrt_ready(model)
    assert "input 'x' has dynamic axis 2; only the batch axis (0) may be dynamic" in problems
    assert "output 'y' has dynamic axis 2; only the batch axis (0) may be dynamic" in problems


def test_unknown_custom_and_unsupported_ops_are_refused() -> None:
    custom = helper.make_node("FancyNorm", ["y"], ["z"], domain="com.example")
    model = conv_model(
        extra_nodes=[custom], outputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 2, 8, 8])]
    )
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    assert check_tensorrt_ready(model) == [
        "custom operator(s) com.example::FancyNorm: TensorRT would need a plugin for each"
    ]
    flat = helper.make_node("Flatten", ["y"], ["f"], axis=0)
    unique = helper.make_node("Unique", ["f"], ["u"])
    model = conv_model(
        extra_nodes=[flat, unique], outputs=[helper.make_tensor_value_info("u", TensorProto.FLOAT, [None])]
    )
    problems = check_tensorrt_ready(model)
    assert "operator(s) not supported by TensorRT's ONNX parser: Unique" in problems


def test_sequence_operator_is_refused() -> None:
    split = helper.make_node("SplitToSequence", ["y"], ["s"], axis=1)
    at = helper.make_node("SequenceAt", ["s", "zero"], ["z"])
    zero = helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("v", TensorProto.INT64, [], [0]))
    model = conv_model(
        extra_nodes=[split, zero, at], outputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 1, 8, 8])]
    )
    assert check_tensorrt_ready(model) == [
        "sequence operator(s) SequenceAt, SplitToSequence: TensorRT has no sequence type"
    ]


def test_undeclared_input_is_refused() -> None:
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", 2, 8, 8])
    mul = helper.make_node("Mul", ["y", "mask"], ["z"])
    model = conv_model(
        extra_nodes=[mul],
        extra_inputs=[mask],
        outputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 2, 8, 8])],
    )
    assert check_tensorrt_ready(model) == []
    assert check_tensorrt_ready(model, expected_inputs={"x"}) == [
        "unexpected graph input(s) mask (declared: x); fold masks and flags into constants before export"
    ]


def test_ops_inside_if_branches_are_checked_and_warned() -> None:
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["B", 2, 8, 8])
    then = helper.make_graph([helper.make_node("RandomUniformLike", ["y"], ["b"])], "then", [], [out])
    other = helper.make_graph([helper.make_node("Identity", ["y"], ["b"])], "else", [], [out])
    cond = helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
    branch = helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=other)
    model = conv_model(
        extra_nodes=[cond, branch], outputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 2, 8, 8])]
    )
    assert any(p.startswith("random operator(s) RandomUniformLike") for p in check_tensorrt_ready(model))
    assert control_flow_warnings(model) == [
        "If node(s): TensorRT needs static trip counts and same-rank branches; prefer unrolling"
    ]


def test_assert_raises_one_line_listing_every_problem(tmp_path: Path) -> None:
    argmax = helper.make_node("ArgMax", ["y"], ["idx"], axis=1, keepdims=0)
    model = conv_model(
        opset=21, extra_nodes=[argmax], outputs=[helper.make_tensor_value_info("idx", TensorProto.INT64, ["B", 8, 8])]
    )
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError) as err:
        assert_tensorrt_ready(path, expected_inputs={"x"})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path} is not ready for TensorRT: opset 21 is newer")
    assert "output 'idx' is int64" in msg


def test_unreadable_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="ONNX file not found"):
        check_tensorrt_ready(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 definitely not protobuf \xff\xff")
    with pytest.raises(UserError, match="is not a readable ONNX file"):
        check_tensorrt_ready(junk)
