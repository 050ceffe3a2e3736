"""A real report from two baselines on small synthetic clips: files, numbers, figures and user errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.errors import UserError
from edge_ad.evaluation.baselines import MOG2, FrameDifference
from edge_ad.evaluation.figures import examples_size_px, roc_size_px
from edge_ad.evaluation.methods import resize_maps
from edge_ad.evaluation.report import EvalResults, Evaluator, format_table, write_report
from edge_ad.metrics import aupro, frame_auroc, ped1_pixel_roc, pixel_auroc

H, W, EVAL = 60, 80, (48, 64)


def clip(seed: int, anomalous: bool, frames: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured static scene with noise; in an anomalous clip a square enters halfway and moves."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur((np.random.default_rng(7).random((H, W)) * 200 + 20).astype(np.uint8), (0, 0), 2)
    out, masks = [], []
    for t in range(frames):
        f = bg.astype(np.int16) + rng.integers(-2, 3, (H, W))
        m = np.zeros((H, W), bool)
        if anomalous and t >= frames // 2:
            x = 5 + 3 * (t - frames // 2) + seed % 4
            f[20:34, x : x + 14] = rng.integers(150, 256, (14, 14))
            m[20:34, x : x + 14] = True
        out.append(np.clip(f, 0, 255).astype(np.uint8))
        masks.append(m)
    masks = np.stack(masks)
    return np.stack(out), masks.any(axis=(1, 2)), masks


def methods() -> list:
    mog = MOG2(history=30, size=(32, 32))
    mog.warm_up(clip(99, anomalous=False)[0])
    return [FrameDifference(size=(40, 40)), mog]


@pytest.fixture(scope="module")
def evaluated() -> tuple[EvalResults, dict]:
    """Four masked clips, one clip with labels but no masks, one without labels; plus the maps each method
    gives, kept here (not by the evaluator) to check the streamed pixel metrics against in-memory ones."""
    ms = methods()
    ev = Evaluator(ms, eval_size=EVAL, n_examples=4)
    kept: dict = {m.name: [] for m in ms}
    data = [(f"masked{i}", *clip(i, anomalous=i % 2 == 0)) for i in range(4)]
    for name, frames, labels, masks in data:
        assert ev.add_clip(name, frames, labels, masks)
        for m in ms:
            m.reset()
            kept[m.name].append(resize_maps(m.score_clip(frames)[0], EVAL))
    frames, labels, _ = clip(10, anomalous=True)
    assert ev.add_clip("unmasked", frames, labels)
    assert not ev.add_clip("unlabelled", frames, None)
    gt = np.concatenate([cv2_resize_masks(masks) for *_, masks in data])
    labels = np.concatenate([labels for _, _, labels, _ in data])
    return ev.results(), {"maps": {n: np.concatenate(v) for n, v in kept.items()}, "masks": gt, "labels": labels}


def cv2_resize_masks(masks: np.ndarray) -> np.ndarray:
    return np.stack([cv2.resize(m.astype(np.uint8), EVAL[::-1], interpolation=cv2.INTER_NEAREST) > 0 for m in masks])


@pytest.fixture(scope="module")
def report_dir(evaluated, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "nested" / "out"
    write_report(out, evaluated[0])
    return out


def table_cells(md: str) -> dict[str, dict[str, str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    return {r[0]: dict(zip(header, r, strict=True)) for r in body}


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def test_report_files_exist_and_figures_are_valid_images(report_dir: Path, evaluated) -> None:
    results = evaluated[0]
    for name in ["report.json", "report.md", "roc_frame.png", "roc_pixel.png", "examples.png"]:
        assert (report_dir / name).is_file(), name
    for name in ["roc_frame.png", "roc_pixel.png"]:
        img = cv2.imread(str(report_dir / name))
        assert img is not None and (img.shape[1], img.shape[0]) == roc_size_px()
    img = cv2.imread(str(report_dir / "examples.png"))
    assert img is not None
    assert len(results.examples) == 4
    assert (img.shape[1], img.shape[0]) == examples_size_px(4, 2)


def test_json_agrees_with_markdown_and_terminal_table(report_dir: Path, evaluated) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    md = (report_dir / "report.md").read_text()
    cells = table_cells(md)
    terminal = format_table(evaluated[0])
    assert set(cells) == set(report["methods"]) == {"frame-diff-k1", "mog2"}
    for name, s in report["methods"].items():
        row = cells[name]
        assert row["frame AUROC"] == pct(s["frame_auroc"])
        assert row["frame EER"] == pct(s["frame_eer"])
        assert row["pixel AUROC"] == pct(s["pixel_auroc"])
        assert row["AUPRO@30%"] == pct(s["aupro"])
        assert row["Ped1 pixel EER"] == pct(s["ped1_eer"])
        assert row["Ped1 pixel AUC"] == pct(s["ped1_auc"])
        assert row["frames"] == str(s["frames"]) == "100"  # 4 masked clips + the unmasked one, 20 frames each
        assert row["clips"] == str(s["clips"]) == "5"
        assert row["anomalous frames"] == str(s["anomalous_frames"]) == "30"
        terminal_row = next(line.split() for line in terminal.splitlines() if line.startswith(name))
        assert terminal_row == list(row.values())
    assert "unlabelled" in md and report["skipped"] == ["unlabelled"]


def test_json_numbers_are_recomputable(report_dir: Path, evaluated) -> None:
    """Frame AUROC from the JSON's own scores and labels; pixel metrics from the maps computed in memory."""
    report = json.loads((report_dir / "report.json").read_text())
    _, ref = evaluated
    labels = np.concatenate([report["labels"][c["name"]] for c in report["clips"]])
    for name, s in report["methods"].items():
        scores = np.concatenate([report["frame_scores"][name][c["name"]] for c in report["clips"]])
        assert s["frame_auroc"] == pytest.approx(frame_auroc(scores, labels))
        maps = ref["maps"][name]
        assert s["pixel_count"] == maps.size  # only the masked clips enter pixel metrics
        assert s["pixel_auroc"] == pytest.approx(pixel_auroc(maps, ref["masks"]).auroc, abs=1e-9)
        assert s["aupro"] == pytest.approx(aupro(maps, ref["masks"]).aupro, abs=0.01)
        ped1 = ped1_pixel_roc(maps, ref["masks"], ref["labels"])
        assert (s["ped1_eer"], s["ped1_auc"]) == pytest.approx((ped1.eer, ped1.auc))
        assert set(report["curves"]["frame"]) == set(report["methods"])


def test_baselines_find_the_square(evaluated) -> None:
    for s in evaluated[0].summaries().values():
        assert s.frame_auroc > 0.9 and s.pixel_auroc > 0.9


def test_clip_without_labels_is_skipped_with_a_warning(caplog) -> None:
    ev = Evaluator([FrameDifference()], eval_size=EVAL)
    frames, _, _ = clip(1, anomalous=False)
    with caplog.at_level(logging.WARNING):
        assert not ev.add_clip("street-03", frames, np.array([]))
    assert "street-03" in caplog.text
    assert ev.results().skipped == ["street-03"] and ev.results().clips == []


def test_masks_of_another_size_name_the_clip() -> None:
    ev = Evaluator([FrameDifference()], eval_size=EVAL)
    frames, labels, masks = clip(0, anomalous=True)
    with pytest.raises(UserError, match=r"clip Test017: masks are 20x30x40 but frames are 20x60x80") as e:
        ev.add_clip("Test017", frames, labels, masks[:, :30, :40])
    assert "\n" not in str(e.value)


def test_label_count_and_duplicate_names_are_user_errors() -> None:
    ev = Evaluator([FrameDifference()], eval_size=EVAL)
    frames, labels, _ = clip(0, anomalous=True)
    with pytest.raises(UserError, match="clip a: 19 frame labels for 20 frames"):
        ev.add_clip("a", frames, labels[:-1])
    ev.add_clip("a", frames, labels)
    with pytest.raises(UserError, match="clip a was added twice"):
        ev.add_clip("a", frames, labels)


def test_without_masks_only_frame_metrics_and_no_pixel_figure(tmp_path: Path) -> None:
    ev = Evaluator([FrameDifference()], eval_size=EVAL, n_examples=2)
    for i in range(2):
        frames, labels, _ = clip(i, anomalous=i == 0)
        ev.add_clip(f"c{i}", frames, labels)
    results = ev.results()
    write_report(tmp_path, results)
    s = json.loads((tmp_path / "report.json").read_text())["methods"]["frame-diff-k1"]
    assert s["frame_auroc"] is not None and s["pixel_auroc"] is None and s["aupro"] is None
    assert not (tmp_path / "roc_pixel.png").exists() and (tmp_path / "roc_frame.png").exists()
    assert "no clip has ground-truth masks" in (tmp_path / "report.md").read_text()
    assert "-" in format_table(results).splitlines()[2].split()


def test_report_folder_that_is_a_file_is_a_user_error(tmp_path: Path, evaluated) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        write_report(target, evaluated[0])


def test_scores_by_kind_pit_each_kinds_frames_against_every_normal_frame(tmp_path: Path) -> None:
    """Two kinds named alone (a clip naming one twice names one), one clip naming both (left out of both), one clip naming none: each kind's AUROC is
    that of its own clips' anomalous frames against the normal frames of all five clips, as computed here."""
    ev = Evaluator([FrameDifference(size=(40, 40))], eval_size=EVAL, n_examples=2)
    named = {"a": ("square",), "b": ("square", "square"), "c": ("blob",), "d": ("square", "blob"), "e": ()}
    data = {n: clip(i, anomalous=n != "e") for i, n in enumerate(named)}
    for n, (frames, labels, masks) in data.items():
        ev.add_clip(n, frames, labels, masks, named[n])
    results = ev.results()
    scores = results.methods["frame-diff-k1"].scores
    normal = np.concatenate([scores[n][~data[n][1]] for n in named])
    rows = {k.kind: k for k in results.by_kind}
    assert list(rows) == ["square", "blob"]
    for kind, clips in (("square", ["a", "b"]), ("blob", ["c"])):
        mine = np.concatenate([scores[n][data[n][1]] for n in clips])
        expected = frame_auroc(np.concatenate([mine, normal]), np.r_[np.ones(mine.size), np.zeros(normal.size)])
        assert rows[kind].frame_auroc["frame-diff-k1"] == pytest.approx(expected)
        assert (rows[kind].clips, rows[kind].anomalous_frames) == (len(clips), mine.size)
    write_report(tmp_path, results)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [k["kind"] for k in report["by_kind"]] == ["square", "blob"]
    md = (tmp_path / "report.md").read_text()
    assert "## By anomaly kind" in md
    square = next(line for line in md.splitlines() if line.startswith("| square |"))
    assert square == f"| square | 2 | 20 | {pct(rows['square'].frame_auroc['frame-diff-k1'])} |"
    assert "frame AUROC by anomaly kind" in format_table(results)


def test_no_kind_table_when_no_clip_names_a_kind(report_dir: Path, evaluated) -> None:
    assert evaluated[0].by_kind == []
    assert json.loads((report_dir / "report.json").read_text())["by_kind"] == []
    assert "By anomaly kind" not in (report_dir / "report.md").read_text()
    assert "by anomaly kind" not in format_table(evaluated[0])
