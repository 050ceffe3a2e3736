"""Session fixtures: a small synthetic scene, a tiny model trained on it, and its exported bundle.

Everything is real: the scene is written in the UCSD layout by `edge_ad.data.synth`, the model is trained
with the tiny config (seconds on two cores), and the bundle passes the same parity gate as any export.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_ad.data.synth import make_scene

    root = tmp_path_factory.mktemp("scene") / "ucsd"
    make_scene(root, n_train=6, n_test=3, frames=48, seed=11, size=(96, 128))
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_ad.config import load_config
    from edge_ad.scoring.calibrate import calibrate_run
    from edge_ad.training.train import train

    out = tmp_path_factory.mktemp("run") / "tiny"
    train(load_config(CONFIGS / "tiny.yaml"), tiny_scene, out)
    calibrate_run(out, tiny_scene)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path, tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_ad.export.exporter import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_run, out, data_root=tiny_scene)
    return out


@pytest.fixture
def edited_run(tiny_run: Path, tmp_path: Path) -> Callable[[Callable[[dict], None]], Path]:
    """A copy of the tiny run whose config.yaml an ``edit`` changed in place (the trained weights are shared
    by value): for scoring options that need only a recalibration, not a retraining."""
    import yaml

    def make(edit: Callable[[dict], None]) -> Path:
        run = tmp_path / "run"
        shutil.copytree(tiny_run, run)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        edit(cfg)
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        return run

    return make


@pytest.fixture
def exported_like_torch(tiny_scene: Path, tmp_path: Path) -> Callable[[Path], None]:
    """Export a calibrated run and check that ONNX Runtime gives its PyTorch map and frame score on eight frames
    of a test clip: whatever the scorer holds (per-pixel statistics, a background) must travel in the graph."""

    def check(run: Path) -> None:
        import numpy as np
        import onnxruntime as ort
        import torch

        from edge_ad.data.ucsd import open_ucsd
        from edge_ad.export.exporter import export_bundle
        from edge_ad.scoring.load import load_pipeline
        from edge_ad.training.frames import clip_tensor

        config, pipeline, _ = load_pipeline(run)
        bundle = export_bundle(run, tmp_path / "exported")
        x = torch.from_numpy(clip_tensor(open_ucsd(tiny_scene).test[0], config).frames[:8]).float()
        session = ort.InferenceSession(str(bundle.graph("pipeline")), providers=["CPUExecutionProvider"])
        ort_map, ort_score = session.run(None, {"frames": x.numpy()})
        with torch.no_grad():
            torch_map, torch_score = pipeline(x)
        # (a code on a tie may flip between the two runtimes; a missing buffer would move every pixel)
        assert np.quantile(np.abs(ort_map - torch_map.numpy()), 0.99) < 1e-3
        scale = max(1.0, float(torch_score.abs().max()))
        np.testing.assert_allclose(ort_score, torch_score.numpy(), atol=1e-3 * scale)

    return check


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """``edge-ad ARGS`` in this process: (exit status, stdout, stderr), as a user's shell would see them."""
    from edge_ad.cli.main import main

    def run(args: list[str]) -> tuple[int, str, str]:
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def variable_rate_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone-like recording, 120 frames at 128x96: 30 frames/s for 2 s, then 15 frames/s for 4 s."""
    import subprocess

    path = tmp_path_factory.mktemp("vfr") / "phone.mp4"
    pts = "setpts='if(lt(N,60),N/30,2+(N-60)/15)/TB'"
    cmd = ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=128x96:rate=30:duration=5", "-vf",
           pts, "-fps_mode", "vfr", "-frames:v", "120", "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)
    return path
