"""Evaluation end to end on the tiny model: our maps and the baselines, the report, and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_ad.data.synth import ANOMALY_KINDS
from edge_ad.data.ucsd import open_ucsd
from edge_ad.errors import UserError
from edge_ad.evaluation.evaluate import evaluate


def test_eval_bundle_with_baselines_writes_report(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    results = evaluate(tiny_scene, out, bundle=tiny_bundle)
    report = json.loads((out / "report.json").read_text())
    names = {m["name"] if isinstance(m, dict) and "name" in m else m for m in report["methods"]}
    assert {"edge-ad (bundle)", "frame-diff-k1"} <= set(names) or len(names) >= 3
    assert (out / "report.md").read_text().count("|") > 10
    for png in ("roc_frame.png", "examples.png"):
        assert cv2.imread(str(out / png)) is not None
    summaries = results.summaries()
    ours = summaries["edge-ad (bundle)"]
    assert ours.frame_auroc is not None and 0.0 <= ours.frame_auroc <= 1.0
    # the synthetic scene's label file names each clip's anomaly kinds: the kinds table follows them
    clips = open_ucsd(tiny_scene).test
    kinds = [set(c.kinds) for c in clips]
    alone = {min(k): kinds.count(k) for k in kinds if len(k) == 1}
    assert alone and set(alone) <= set(ANOMALY_KINDS)
    assert {k["kind"]: k["clips"] for k in report["by_kind"]} == alone
    assert all(set(k["frame_auroc"]) == set(report["methods"]) for k in report["by_kind"])


def test_eval_run_shows_each_map(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    results = evaluate(tiny_scene, tmp_path / "r", run=tiny_run, baselines=False)
    names = set(results.summaries())
    assert "edge-ad" in names and "edge-ad:nll" in names and "edge-ad:ssim_am" in names


def test_eval_run_without_prior_skips_its_maps(tiny_run: Path, tiny_scene: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "prior.safetensors").unlink()
    (run / "calibration.json").unlink()
    results = evaluate(tiny_scene, tmp_path / "r", run=run, baselines=False)
    assert "no trained prior" in capsys.readouterr().out
    assert not any("nll" in n or "restore" in n for n in results.summaries())


def test_eval_clip_without_ground_truth_is_skipped(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_scene, data)
    for m in data.glob("*.m"):
        m.unlink()
    shutil.rmtree(data / "Test" / "Test001_gt")
    evaluate(data, tmp_path / "r", bundle=tiny_bundle, baselines=False)
    assert "Test001 has no ground truth" in capsys.readouterr().out


def test_eval_scores_a_clip_with_a_damaged_frame_and_names_it(
    tiny_bundle: Path, tiny_scene: Path, tmp_path: Path, caplog
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_scene, data)
    clip = open_ucsd(data).test[0]
    damaged = clip.frame_paths[5]
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated, as UCSD Ped1 ships Test017/142.tif
    with caplog.at_level("WARNING"):
        evaluate(data, tmp_path / "r", bundle=tiny_bundle, baselines=False)
    assert f"clip {clip.name}: 1 frame(s) do not decode ({damaged.name}" in caplog.text
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    info = {c["name"]: c for c in report["clips"]}
    assert info[clip.name]["stand_in_frames"] == [6]
    assert all(not c["stand_in_frames"] for n, c in info.items() if n != clip.name)
    scores = report["frame_scores"]["edge-ad (bundle)"][clip.name]
    assert len(scores) == len(report["labels"][clip.name]) == len(clip)  # every label kept, none shifted
    assert f"{clip.name}: frame(s) 6 did not decode" in (tmp_path / "r" / "report.md").read_text()


def test_eval_masks_of_wrong_size(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_scene, data)
    for m in (data / "Test" / "Test002_gt").iterdir():
        cv2.imwrite(str(m), cv2.resize(cv2.imread(str(m), 0), (20, 10)))
    with pytest.raises(UserError, match="Test002"):
        evaluate(data, tmp_path / "r", bundle=tiny_bundle, baselines=False)


def test_compare_maps_scores_each_map_beside_the_runs_own(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    """The compared maps are rows of their own, calibrated; the edge-ad row stays the run's final map, score for
    score."""
    from edge_ad.evaluation.model_methods import RunMaps

    own = evaluate(tiny_scene, tmp_path / "own", run=tiny_run, baselines=False, max_clips=2)
    results = evaluate(
        tiny_scene, tmp_path / "r", run=tiny_run, baselines=False, max_clips=2, compare=["residual", "am"]
    )
    assert set(results.summaries()) == {"edge-ad", "edge-ad:residual", "edge-ad:am"}
    for clip, scores in own.methods["edge-ad"].scores.items():
        np.testing.assert_array_equal(results.methods["edge-ad"].scores[clip], scores)
        assert not np.array_equal(results.methods["edge-ad:am"].scores[clip], scores)
    compared = RunMaps(tiny_run, ["residual", "am"]).alone
    assert set(compared.names) == {"residual", "am"}
    assert not torch.equal(compared.center, torch.zeros_like(compared.center))  # calibrated, not identity
    assert not torch.equal(compared.scale, torch.ones_like(compared.scale))


def test_compare_maps_that_need_the_prior_beside_a_map_that_does_not(
    edited_run, tiny_scene: Path, tmp_path: Path
) -> None:
    """The run's own map needs no prior logits; the compared ones do: one shared encoding gives them both."""
    from edge_ad.scoring.calibrate import calibrate_run

    run = edited_run(lambda cfg: cfg["scoring"].update(weights={"residual": 1.0}))
    calibrate_run(run, tiny_scene)
    own = evaluate(tiny_scene, tmp_path / "own", run=run, baselines=False, max_clips=1)
    results = evaluate(tiny_scene, tmp_path / "r", run=run, baselines=False, max_clips=1, compare=["nll", "restore"])
    assert set(results.summaries()) == {"edge-ad", "edge-ad:nll", "edge-ad:restore"}
    for clip, scores in own.methods["edge-ad"].scores.items():
        np.testing.assert_array_equal(results.methods["edge-ad"].scores[clip], scores)
        assert np.ptp(results.methods["edge-ad:nll"].scores[clip]) > 0


def test_compared_maps_keep_the_runs_normalisation_of_each(edited_run, tiny_scene: Path) -> None:
    """A map the run normalises globally is compared normalised globally; comparing a map the run does not
    override is no config error."""
    from edge_ad.evaluation.model_methods import RunMaps
    from edge_ad.scoring.calibrate import calibrate_run

    weights = {"residual": 1.0, "nll": 0.5}
    run = edited_run(
        lambda cfg: cfg["scoring"].update(normalise="pixel", normalise_maps={"nll": "global"}, weights=weights)
    )
    calibrate_run(run, tiny_scene)
    compared = RunMaps(run, ["nll", "am"]).alone
    nll, am = compared.names.index("nll"), compared.names.index("am")
    assert bool((compared.center[nll] == compared.center[nll, 0, 0]).all())  # one value: global
    assert float(compared.center[am].std()) > 0  # the run's default for the others: per pixel
    assert RunMaps(run, ["am"]).alone.names == ["am"]


@pytest.fixture(scope="module")
def frame_only_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run without motion channels and without a prior, trained one epoch: what it cannot score."""
    from edge_ad.config import load_config
    from edge_ad.scoring.calibrate import calibrate_run
    from edge_ad.training.train import train

    out = tmp_path_factory.mktemp("run") / "frame_only"
    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    overrides = ["data.temporal_offsets=[]", "prior.enabled=false", "training.epochs=1", "scoring.weights={ssim: 1}"]
    train(load_config(tiny, overrides), tiny_scene, out)
    calibrate_run(out, tiny_scene)
    return out


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (["nll", "residual"], "--compare-maps: nll needs the prior, which"),
        (["residual@motion"], "need motion channels"),
    ],
)
def test_compare_maps_the_run_cannot_give_are_a_user_error(
    maps: list[str], message: str, frame_only_run: Path, tiny_scene: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match=message):
        evaluate(tiny_scene, tmp_path / "r", run=frame_only_run, baselines=False, compare=maps)


def test_compare_maps_rejects_unknown_map(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown map"):
        evaluate(tiny_scene, tmp_path / "r", run=tiny_run, baselines=False, compare=["bogus"])


def test_several_areas_without_normal_footage_for_the_baselines_is_a_user_error() -> None:
    from edge_ad.config import load_config
    from edge_ad.evaluation.evaluate import baseline_methods

    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    cfg = load_config(tiny, ["scoring.extra_topk_fractions=[0.005]"]).to_dict()
    with pytest.raises(UserError, match="several areas needs normal training clips"):
        baseline_methods(cfg, None, None)
    assert len(baseline_methods(load_config(tiny).to_dict(), None, None)) >= 2  # one area needs no fit


def test_baselines_are_calibrated_on_the_clips_our_threshold_was_set_on(
    tiny_bundle: Path, tiny_run: Path, tiny_scene: Path, tmp_path: Path
) -> None:
    """A threshold above the worst normal frame rises with the footage it is set on: the alert table is fair
    only when every method's is set on the same footage, our validation clips."""
    from edge_ad.config import load_config
    from edge_ad.data.ucsd import open_ucsd
    from edge_ad.evaluation.evaluate import WARM_UP_FRAMES, baseline_methods

    val = json.loads((tiny_run / "calibration.json").read_text())["val_clips"]
    train = open_ucsd(tiny_scene).train
    assert val and len(val) < len(train)
    cfg = load_config(tiny_run / "config.yaml").to_dict()
    by_name = {c.name: c for c in train}
    warm = [c for c in train if c.name not in val][-1].load_frames()[:WARM_UP_FRAMES]
    expected = {m.name: m.alert_threshold for m in baseline_methods(cfg, warm, [by_name[n].load_frames() for n in val])}
    results = evaluate(tiny_scene, tmp_path / "r", bundle=tiny_bundle)
    assert {name: results.alerts[name].threshold for name in expected} == pytest.approx(expected)
    # the older rule (one training clip) gives another threshold on this scene, so the check above can fail
    older = baseline_methods(cfg, warm, [train[-2].load_frames()])
    assert any(m.alert_threshold != pytest.approx(expected[m.name]) for m in older)


def test_baselines_fall_back_to_a_training_clip_when_our_footage_is_not_there(
    tiny_run: Path, tiny_scene: Path, tmp_path: Path, capsys
) -> None:
    """A bundle evaluated elsewhere: its validation clips and footage are not in this data. The baselines are
    then calibrated on a training clip, with a warning that the alert table no longer compares like with like."""
    from edge_ad.config import load_config
    from edge_ad.data.ucsd import open_ucsd
    from edge_ad.evaluation.evaluate import WARM_UP_FRAMES, baseline_methods

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    calib = json.loads((run / "calibration.json").read_text())
    calib.update(val_clips=["Train999"], normal_footage=[{"path": str(tmp_path / "gone.mp4"), "frames": 10}])
    (run / "calibration.json").write_text(json.dumps(calib))
    results = evaluate(tiny_scene, tmp_path / "r", run=run, max_clips=1)
    out = capsys.readouterr().out
    assert "gone.mp4, normal footage our threshold was set on, is not here" in out
    assert "does not compare like with like" in out
    train = open_ucsd(tiny_scene).train
    cfg = load_config(run / "config.yaml").to_dict()
    older = baseline_methods(cfg, train[-1].load_frames()[:WARM_UP_FRAMES], [train[-2].load_frames()])
    assert {m.name: results.alerts[m.name].threshold for m in older} == pytest.approx(
        {m.name: m.alert_threshold for m in older}
    )


def test_an_uncalibrated_run_is_evaluated_with_its_baselines(tiny_run: Path, tiny_scene: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "calibration.json").unlink()
    results = evaluate(tiny_scene, tmp_path / "r", run=run, max_clips=1)
    assert "is not calibrated" in capsys.readouterr().out
    assert "edge-ad" not in results.alerts and "frame-diff-k1" in results.alerts


def test_a_run_whose_prior_went_missing_says_so(edited_run) -> None:
    from edge_ad.scoring.load import load_pipeline

    run = edited_run(lambda cfg: None)
    (run / "prior.safetensors").unlink()
    with pytest.raises(UserError, match=r"has no prior.safetensors, and its calibration weights nll"):
        load_pipeline(run)


def test_an_out_that_is_a_file_is_refused_before_anything_is_scored(tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.write_text("not a folder")
    with pytest.raises(UserError, match="is a file; choose another --out"):  # before the run is even opened
        evaluate(tiny_scene, out, run=tmp_path / "no-such-run")


def test_compared_maps_find_the_validation_clips_in_eval_data_when_the_run_data_moved(
    edited_run, tiny_scene: Path
) -> None:
    from edge_ad.evaluation.model_methods import RunMaps

    run = edited_run(lambda cfg: None)
    split = json.loads((run / "split.json").read_text())
    (run / "split.json").write_text(json.dumps({**split, "data_root": "/moved/away"}))
    assert RunMaps(run, ["am"], tiny_scene).alone.names == ["am"]
