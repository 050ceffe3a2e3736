"""Restoration on the tiny run: refinement rounds in the exported graph; the benchmark counts what it times."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ad.benchmarks.restoration import restoration_benchmark
from edge_ad.data.ucsd import open_ucsd
from edge_ad.scoring.calibrate import calibrate_run
from edge_ad.scoring.load import load_pipeline
from edge_ad.scoring.restoration import restore_fast, threshold_off_ties
from edge_ad.training.frames import clip_tensor


def test_reference_makes_one_prior_pass_per_replaced_code(tiny_run: Path, tiny_scene: Path) -> None:
    r = restoration_benchmark(tiny_run, tiny_scene, n_frames=4, quantile=0.9, rounds=1)
    assert r["frames"] == 4 and r["rounds"] == 1 and r["fast_prior_passes"] == 2
    assert r["replaced_fraction_sequential"] > 0  # a threshold at the 90th NLL percentile leaves work to do
    config = load_pipeline(tiny_run)[0]
    h, w = (side // 2**config.model.downsamplings for side in config.data.size)
    changes = r["replaced_fraction_sequential"] * h * w
    assert r["sequential_prior_passes_mean"] == pytest.approx(1 + changes)
    assert 0 < r["code_agreement"] <= 1 and 0 <= r["pixel_auroc_fast"] <= 1 and 0 <= r["pixel_auroc_sequential"] <= 1


def test_bench_measures_the_calibrated_and_a_stressed_threshold(
    cli: Callable[[list[str]], tuple[int, str, str]], tiny_run: Path, tiny_scene: Path
) -> None:
    code, out, err = cli(["bench", "--run", str(tiny_run), "--data", str(tiny_scene)])
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("restoration")]
    assert len(lines) == 2 and all("x faster; codes agree on" in line for line in lines)
    assert f"reproduce: python -m benchmarks.restoration --run {tiny_run}" in out and "--quantile 0.95" in out


def test_refinement_rounds_replace_codes_and_export(
    edited_run: Callable, tiny_scene: Path, exported_like_torch: Callable
) -> None:
    """Two rounds at the benchmark's stressed threshold (NLL quantile 0.95) change the restoration, and ONNX
    Runtime gives PyTorch's map: the rounds are unrolled into the graph, a prior pass each."""
    run = edited_run(lambda cfg: cfg["scoring"].update(restore_quantile=0.95, restore_rounds=2))
    calibrate_run(run, tiny_scene)
    config, pipeline, calib = load_pipeline(run)
    assert 0.95 <= calib["restore_quantile_effective"] <= 0.955  # moved off ties, within the window
    x = torch.from_numpy(clip_tensor(open_ucsd(tiny_scene).test[0], config).frames[:8]).float()
    with torch.no_grad():
        codes = pipeline.encode(x)[0]
        logits, thr = pipeline.prior(codes), torch.tensor(calib["restore_threshold"])
        once, twice = (restore_fast(pipeline.prior, codes, logits, thr, k) for k in (0, 2))
    assert (once != codes).any() and not torch.equal(once, twice)
    exported_like_torch(run)


def test_threshold_moves_off_a_cluster_of_repeated_nlls() -> None:
    """A background code repeated frame after frame puts the quantile on a cluster; the threshold moves up to
    the first point a margin away from every NLL, stays the quantile where no NLL is near, and where the
    NLLs are too dense for such a point it moves no further than the window (into its widest gap)."""
    m = 3e-4
    spread = np.linspace(0.0, 10.0, 10_001)  # 1e-3 apart: the 0.5 quantile is 5.0, itself a value
    assert threshold_off_ties(spread, 0.5, margin=m) == pytest.approx(5.0 + m)
    assert threshold_off_ties(spread, 0.50005, margin=m) == pytest.approx(5.0005)  # between values: kept
    # one background code's NLL in each of 40 frames (0.3 % of the codes, inside the window) near 5.0
    cluster = np.concatenate([spread, 5.0 + 1e-6 * np.arange(40)])
    assert 5.0 <= np.quantile(cluster, 0.5) < 5.00004
    t = threshold_off_ties(cluster, 0.5, margin=m)
    assert t == pytest.approx(5.000039 + m)  # just above the cluster, a margin below 5.001
    assert np.abs(cluster - t).min() >= m - 1e-9
    dense = np.linspace(0.0, 1.0, 100_001)  # 1e-5 apart: no point is a margin away from every NLL
    t = threshold_off_ties(dense, 0.5, margin=m, window=0.005)
    assert 0.5 < t <= np.quantile(dense, 0.505) and (dense <= t).mean() <= 0.505 + 1e-4
    assert threshold_off_ties(np.full(10, 5.0), 0.9, margin=m) == pytest.approx(5.0 + m)  # above them all
