"""The ONNX Runtime backend on the real tiny bundle: shapes, batching, and refusing a broken graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.cli.main import main
from edge_ad.errors import UserError
from edge_ad.export.bundle import load_bundle, write_manifest
from edge_ad.runtime.backends import create_backend
from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend, resolve_providers


def _frames(bundle, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, bundle.channels, *bundle.input_size), dtype=np.float32)


def test_maps_and_scores_have_the_contract_shapes(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    backend = create_backend("onnxruntime", bundle, threads=1)
    result = backend.infer(_frames(bundle, 3))
    assert result.maps.shape == (3, *bundle.input_size)
    assert result.scores.shape == (3,)
    assert result.maps.dtype == np.float32 and result.scores.dtype == np.float32
    assert np.isfinite(result.maps).all() and np.isfinite(result.scores).all()
    assert backend.providers == ["CPUExecutionProvider"]


def test_a_batch_gives_what_single_frames_give(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    backend = OnnxRuntimeBackend(bundle, max_batch=8)
    x = _frames(bundle, 5, seed=1)
    batched = backend.infer(x)
    for i in range(len(x)):
        one = backend.infer(x[i : i + 1])
        np.testing.assert_allclose(batched.maps[i], one.maps[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batched.scores[i], one.scores[0], rtol=1e-4, atol=1e-5)


def test_wrong_input_shape_is_refused(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    backend = OnnxRuntimeBackend(bundle)
    with pytest.raises(ValueError, match="bundle takes"):
        backend.infer(np.zeros((1, bundle.channels + 1, *bundle.input_size), np.float32))


def test_missing_provider_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not available in this onnxruntime build"):
        resolve_providers(["cuda"] if "CUDAExecutionProvider" not in _available() else ["NoSuchExecutionProvider"])


def _available() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def test_corrupt_onnx_names_the_file(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    graph = broken / manifest["graphs"]["pipeline"]
    graph.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    # Re-sign the manifest, as a careless hand edit would: the checksum passes, the graph must still be refused.
    body = {k: manifest[k] for k in ("input", "calibration", "graphs")}
    write_manifest(broken, body, list(manifest["files"]))
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(3):
        cv2.imwrite(str(clip / f"{i:03d}.png"), np.full((48, 64), 100, np.uint8))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--bundle", str(broken), "--frames", str(clip), "--metrics-port", "0",
              "--endpoint", "tcp://127.0.0.1:*", "--journal", str(tmp_path / "journal")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("edge-ad: error:")
    assert graph.name in err[0] and "not a usable ONNX graph" in err[0]
