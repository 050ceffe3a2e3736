"""Training: what matters (reconstruction, codebook health, the prior's view of anomalies) and bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ad.config import load_config
from edge_ad.data.ucsd import open_ucsd
from edge_ad.errors import UserError
from edge_ad.models.prior import code_nll
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.load import load_pipeline
from edge_ad.training.frames import clip_tensor
from edge_ad.training.stages import vqvae_validation
from edge_ad.training.train import load_training_frames, train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

TINY = CONFIGS / "tiny.yaml"


def test_reconstruction_beats_untrained_model(tiny_run: Path, tiny_scene: Path) -> None:
    cfg, pipe, _ = load_pipeline(tiny_run)
    _, val = load_training_frames(cfg, tiny_scene)
    torch.manual_seed(0)
    trained = vqvae_validation(pipe.vqvae, val, torch.device("cpu"))
    fresh = vqvae_validation(VQVAE.from_config(cfg).eval(), val, torch.device("cpu"))
    assert trained["val_mse"] < 0.2 * fresh["val_mse"], (trained, fresh)


def test_codebook_is_healthy(tiny_run: Path, tiny_scene: Path) -> None:
    cfg, pipe, _ = load_pipeline(tiny_run)
    _, val = load_training_frames(cfg, tiny_scene)
    stats = vqvae_validation(pipe.vqvae, val, torch.device("cpu"))
    assert stats["val_perplexity"] > 8, stats  # of 64 codes: no collapse onto a handful
    assert stats["val_usage"] > 0.2, stats


def test_prior_finds_anomalous_codes_unlikely(tiny_run: Path, tiny_scene: Path) -> None:
    cfg, pipe, _ = load_pipeline(tiny_run)
    ds = open_ucsd(tiny_scene)
    inside, normal = [], []
    f = 2**cfg.model.downsamplings
    h, w = cfg.data.size
    for clip in ds.test:
        x = torch.from_numpy(clip_tensor(clip, cfg).frames).float()
        masks = clip.load_masks()
        with torch.no_grad():
            codes, _, logits = pipe.encode(x)
            nll = code_nll(logits, codes).numpy()
        for i, m in enumerate(masks):
            cells = (
                torch.nn.functional.adaptive_max_pool2d(
                    torch.from_numpy(m.astype(np.float32))[None, None], (h // f, w // f)
                )[0, 0].numpy()
                > 0
            )
            if cells.any():
                inside.append(nll[i][cells])
            elif not clip.labels[i]:
                normal.append(nll[i].ravel())
    inside_mean = float(np.concatenate(inside).mean())
    normal_mean = float(np.concatenate(normal).mean())
    assert inside_mean > 1.5 * normal_mean, (inside_mean, normal_mean)


def test_resume_refuses_another_config(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = load_config(TINY, ["model.n_codes=32"])
    with pytest.raises(UserError, match="another model/data config"):
        train(other, tiny_scene, run, resume=True)


def test_resume_refuses_other_data_and_a_folder_with_no_run(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = tmp_path / "other"
    shutil.copytree(tiny_scene, other)
    shutil.rmtree(next((other / "Train").iterdir()))
    cfg = load_config(TINY)
    with pytest.raises(UserError, match="trained on other clips"):
        train(cfg, other, run, resume=True)
    with pytest.raises(UserError, match="holds no run to continue"):
        train(cfg, tiny_scene, tmp_path / "empty", resume=True)


def test_data_with_no_training_clips_leaves_no_run_folder(tiny_scene: Path, tmp_path: Path) -> None:
    tests_only = tmp_path / "tests_only"
    shutil.copytree(tiny_scene / "Test", tests_only / "Test")
    out = tmp_path / "run"
    with pytest.raises(UserError, match="has no training clips"):
        train(load_config(TINY), tests_only, out)
    assert not out.exists()


def test_refuses_to_overwrite_a_trained_run(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(UserError, match="already holds a trained run"):
        train(load_config(TINY), tiny_scene, run)


def test_nan_loss_names_epoch(tiny_scene: Path, tmp_path: Path) -> None:
    cfg = load_config(TINY, ["training.lr=1e12", "training.epochs=2", "training.max_train_frames=64"])
    with pytest.raises(UserError, match=r"loss became .* in epoch 1; lower the learning rate"):
        train(cfg, tiny_scene, tmp_path / "run", stage="vqvae")


def test_empty_training_set(tmp_path: Path) -> None:
    (tmp_path / "Train" / "Train001").mkdir(parents=True)
    (tmp_path / "Test" / "Test001").mkdir(parents=True)
    with pytest.raises(UserError):
        train(load_config(TINY), tmp_path, tmp_path / "run")


def test_mixed_frame_sizes(tiny_scene: Path, tmp_path: Path) -> None:
    import cv2

    root = tmp_path / "mixed"
    shutil.copytree(tiny_scene / "Train", root / "Train")
    odd = root / "Train" / "Train999"
    odd.mkdir()
    for i in range(1, 4):
        cv2.imwrite(str(odd / f"{i:03d}.tif"), np.zeros((50, 70), np.uint8))
    with pytest.raises(UserError, match="mixed frame sizes"):
        train(load_config(TINY), root, tmp_path / "run")


def test_unwritable_output(tiny_scene: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write the run directory"):
        train(load_config(TINY), tiny_scene, blocker / "run")


def test_train_cli_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "-c", str(TINY)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-ad: error:")


def test_a_resumed_stage_that_had_stopped_early_trains_no_more(tiny_run: Path, tmp_path: Path) -> None:
    """Resuming once trained an early-stopped VQ-VAE again and paired it with the prior of its old codes."""
    from edge_ad.training import checkpoint
    from edge_ad.training.rundir import RunDir
    from edge_ad.training.stages import StageContext, _resume

    cfg = load_config(TINY, ["training.patience=2"])
    model = VQVAE.from_config(cfg)
    opt = torch.optim.Adam(model.parameters())
    path = tmp_path / "last.safetensors"
    ctx = StageContext(cfg, RunDir(tmp_path), torch.device("cpu"), resume=True)
    for stale, start in ((2, cfg.training.epochs), (1, 4)):
        meta = {"epoch": 3, "best": 0.1, "stale": stale, "fingerprint": checkpoint.fingerprint(cfg)}
        checkpoint.save(path, model, meta, opt)
        assert _resume(ctx, path, model, opt, cfg.training.epochs)[0] == start


def test_resume_keeps_the_recorded_split(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "split.json").read_text()
    train(load_config(TINY, ["training.seed=5", "data.val_fraction=0.5"]), tiny_scene, run, resume=True)
    assert (run / "split.json").read_text() == before  # another seed once drew clips it trained on as validation


def test_a_refused_prior_stage_leaves_the_run_as_it_was(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "config.yaml").read_text()
    with pytest.raises(UserError, match="VQ-VAE made with another model/data config"):
        train(load_config(TINY, ["model.n_codes=32"]), tiny_scene, run, stage="prior")
    assert (run / "config.yaml").read_text() == before


def test_a_new_vqvae_takes_what_depended_on_the_old_one_away(
    tiny_run: Path, tiny_scene: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = load_config(TINY, ["training.epochs=1", "training.max_train_frames=32"])
    train(cfg, tiny_scene, run, stage="vqvae")
    assert (run / "vqvae.safetensors").is_file()
    assert not any((run / f).exists() for f in ("prior.safetensors", "calibration.json", "normalisation.safetensors"))
    assert "the VQ-VAE changed" in capsys.readouterr().out


@pytest.mark.parametrize("override", ["training.device=gpu", "training.device=mps", "training.seed=-1"])
def test_a_device_or_seed_torch_would_choke_on_is_a_config_error(override: str) -> None:
    with pytest.raises(UserError, match=f"--set {override}"):
        load_config(TINY, [override])


def test_cuda_on_a_machine_without_it_leaves_no_run_folder(tiny_scene: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "run"
    with pytest.raises(UserError, match="no CUDA GPU"):
        train(load_config(TINY, ["training.device=cuda"]), tiny_scene, out)
    assert not out.exists()


def test_a_prior_stage_on_data_without_the_runs_clips_is_refused(
    tiny_run: Path, tiny_scene: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = tmp_path / "other"
    shutil.copytree(tiny_scene, other)
    shutil.rmtree(sorted((other / "Train").iterdir())[0])
    with pytest.raises(UserError, match=r"trained on clips .* does not hold \(Train001\); give its --data"):
        train(load_config(TINY), other, run, stage="prior")


def test_ctrl_c_in_training_says_so_and_how_to_go_on(tiny_scene: Path, tmp_path: Path) -> None:
    """Until 2026-12-07 Typer turned Ctrl-C into a silent exit 130: the user saw no line at all."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_ad.cli.main", "train", "--config", str(TINY), "--data", str(tiny_scene),
         "--out", str(out), "--set", "training.epochs=1000", "--set", "training.patience=1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("stage=vqvae"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == (
        "edge-ad: interrupted; the same command with --resume continues from the last finished epoch"
    )
    assert "Traceback" not in err
    assert (out / "vqvae.last.safetensors").is_file()
