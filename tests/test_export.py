"""Export: parity through ONNX Runtime, TensorRT readiness of every graph, bundle integrity, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_ad.errors import UserError
from edge_ad.export.bundle import MANIFEST, load_bundle, sha256_file
from edge_ad.export.exporter import export_bundle
from edge_ad.export.opcheck import check_tensorrt_ready, control_flow_warnings

GRAPHS = ("encoder", "quantizer", "decoder", "prior", "scorer", "pipeline")


def test_bundle_has_every_graph_and_passed_parity(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    assert set(b.manifest["graphs"]) == set(GRAPHS)
    par = b.manifest["parity"]
    assert par["passed"] and par["code_agreement"] >= 0.999
    assert par["pipeline"]["score_spearman"] >= 0.999
    for name, entry in b.manifest["files"].items():
        assert sha256_file(tiny_bundle / name) == entry["sha256"]
    assert b.threshold > 0 and b.map_scale > 0


@pytest.mark.parametrize("graph", GRAPHS)
def test_every_graph_is_tensorrt_ready(tiny_bundle: Path, graph: str) -> None:
    model = onnx.load(str(tiny_bundle / f"{graph}.onnx"))
    assert check_tensorrt_ready(model) == []
    assert control_flow_warnings(model) == []
    dims = [d for i in model.graph.input for d in i.type.tensor_type.shape.dim]
    assert any(d.dim_param for d in dims), "the batch axis must stay dynamic"


def test_fused_graph_runs_any_batch(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    sess = ort.InferenceSession(str(b.graph("pipeline")), providers=["CPUExecutionProvider"])
    h, w = b.input_size
    for batch in (1, 3):
        m, s = sess.run(None, {"frames": np.random.rand(batch, b.channels, h, w).astype(np.float32)})
        assert m.shape == (batch, 1, h, w) and s.shape == (batch,)


def test_codes_are_int32(tiny_bundle: Path) -> None:
    model = onnx.load(str(tiny_bundle / "quantizer.onnx"))
    codes = next(o for o in model.graph.output if o.name == "codes")
    assert codes.type.tensor_type.elem_type == onnx.TensorProto.INT32


def _copy(bundle: Path, tmp: Path) -> Path:
    dst = tmp / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def test_tampered_file_refused_by_name(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    data = bytearray((b / "decoder.onnx").read_bytes())
    data[-10] ^= 0xFF
    (b / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(UserError, match="decoder.onnx does not match its sha256"):
        load_bundle(b)


def test_truncated_file_refused_by_name(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    data = (b / "pipeline.onnx").read_bytes()
    (b / "pipeline.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="pipeline.onnx has .* bytes, the manifest says"):
        load_bundle(b)


def test_other_schema_version_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    b = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((b / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (b / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="schema version 99"):
        load_bundle(b)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["calibration"].pop("threshold"), r"its calibration\) is damaged \(threshold: Field required"),
        (lambda m: m.update(calibration="x"), r"its calibration\) is damaged \(not a JSON object"),
        (lambda m: m["calibration"].pop("pixel_threshold"), r"\(pixel_threshold: Field required"),
        (lambda m: [f.pop("bytes") for f in m["files"].values()], r"corrupt manifest \(files\..*\.bytes: Field"),
        (lambda m: m.update(files=[]), r"corrupt manifest \(files: not a JSON object"),
        (lambda m: m["input"].update(temporal_offsets=[]), r"2 channels, but grayscale=True with temporal_offsets"),
        (lambda m: m["input"].update(size=[0, 5]), r"input\.size\.0: Input should be greater than 0"),
        (lambda m: m["files"].pop(m["graphs"]["pipeline"]), r"graph file pipeline.onnx has no checksum"),
    ],
)
def test_a_hand_edited_manifest_is_refused_at_load(tiny_bundle: Path, tmp_path: Path, edit, message: str) -> None:
    """Each of these once loaded and then failed mid-stream, or with a traceback, at the first frame or alert."""
    b = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((b / MANIFEST).read_text())
    edit(manifest)
    (b / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=message):
        load_bundle(b)


def test_corrupt_onnx_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    """A corrupt graph whose manifest was regenerated (so checksums pass) still fails with its name."""
    from edge_ad.export.bundle import write_manifest

    b = _copy(tiny_bundle, tmp_path)
    (b / "pipeline.onnx").write_bytes(b"this is not a protobuf")
    manifest = json.loads((b / MANIFEST).read_text())
    files = list(manifest.pop("files"))
    write_manifest(b, manifest, files)
    from edge_ad.runtime.backends import create_backend

    with pytest.raises(UserError, match="pipeline.onnx"):
        create_backend("onnxruntime", load_bundle(b))


def test_run_without_checkpoints(tmp_path: Path, tiny_run: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "config.yaml", run / "config.yaml")
    with pytest.raises(UserError, match="has no vqvae.safetensors"):
        export_bundle(run, tmp_path / "b")


def test_unknown_precision(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        export_bundle(tiny_run, tmp_path / "b", precision="fp8", data_root=tiny_scene)


def test_export_cli_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "b")])
    assert e.value.code == 2
    assert "run directory not found" in capsys.readouterr().err


def test_engines_on_a_host_without_gpu_stop_before_exporting(tiny_run: Path, tmp_path: Path, capsys) -> None:
    from edge_ad.cli.main import main
    from edge_ad.export.tensorrt import tensorrt_gpu_available

    if tensorrt_gpu_available():
        pytest.skip("this host has a GPU with TensorRT")
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as e:
        main(["export", "--run", str(tiny_run), "--out", str(out), "--engines"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need an NVIDIA GPU" in err[0]
    assert not out.exists(), "nothing is exported when the engines cannot be built"


def test_force_replaces_a_bundle_and_nothing_else(
    tiny_run: Path, tiny_scene: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    run_files = sorted(p.name for p in tiny_run.iterdir())
    with pytest.raises(UserError, match="is the run"):
        export_bundle(tiny_run, tiny_run, data_root=tiny_scene, force=True)
    with pytest.raises(UserError, match="holds it"):
        export_bundle(tiny_run, tiny_run.parent, data_root=tiny_scene, force=True)
    assert sorted(p.name for p in tiny_run.iterdir()) == run_files
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match=r"not a bundle \(no manifest.json\)"):
        export_bundle(tiny_run, other, data_root=tiny_scene, force=True)
    assert (other / "keep.txt").read_text() == "mine"
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    (out / "stale.engine").write_bytes(b"from an older export")
    export_bundle(tiny_run, out, data_root=tiny_scene, force=True)
    assert not (out / "stale.engine").exists() and load_bundle(out).manifest["graphs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "photos"]
    assert not list(out.glob(".partial-*"))  # nothing of the build left


def test_export_into_the_current_folder(tiny_run: Path, tiny_scene: Path, tmp_path: Path, monkeypatch) -> None:
    """``--out .`` (a mounted volume's folder, say): the bundle is built inside it, never renamed over it."""
    here = tmp_path / "volume"
    (here / ".partial-999").mkdir(parents=True)  # left by an export that was killed
    monkeypatch.chdir(here)
    export_bundle(tiny_run, Path("."), data_root=tiny_scene)
    assert load_bundle(here).manifest["graphs"] and not list(here.glob(".partial-*"))


def test_a_failed_export_leaves_the_old_bundle(edited_run, tiny_scene: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    run = edited_run(lambda cfg: cfg["export"].update(parity_map_atol=1e-12))
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = (out / MANIFEST).read_text()
    with pytest.raises(UserError, match="parity gate failed"):
        export_bundle(run, out, data_root=tiny_scene, force=True)
    assert (out / MANIFEST).read_text() == before
    load_bundle(out)  # still whole: every checksum holds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "run"]
    assert not list(out.glob(".partial-*"))
