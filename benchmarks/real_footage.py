"""Real footage: a fixed camera's recording of people walking, through import, training, calibration and eval.

    python -m benchmarks.real_footage --video /usr/share/doc/opencv-doc/examples/data/vtest.avi --out DIR

The synthetic scenes say how the maps rank anomalies; they cannot say how a real camera's normal footage
behaves: compression, shadows, people at the frame's edge, on the grass, in groups. OpenCV's sample
``vtest.avi`` (Debian's ``opencv-doc`` package: a PETS 2009 view of a campus crossing, 768x576 colour, 10
frames/s, 795 frames) is real footage of that kind, with no anomaly in it. So:

* each of two folds trains on 48 s of the recording (``edge-ad data import``, 12 clips of 4 s; a quarter of
  them held out for calibration) and tests on the other 31.5 s, which it never saw;
* the test part becomes three clips: 12 s as recorded (normal: its alerts are false alarms on real footage),
  and two in which a stretch plays 2x and 3x as fast, so that every walker seems to jog or run. That is a
  stand-in for a speed anomaly, made of real pixels; it is whole-scene, which frame differencing sees best,
  and it has frame labels only (no masks, so no pixel metrics);
* then ``edge-ad eval`` with the baselines, and again after re-calibrations (``edge-ad calibrate --set``)
  with ``scoring.normalise=global`` and with ``scoring.pixel_stats_sigma=48``: per-pixel statistics learnt
  on 12 s of validation footage mark a walker where the validation clips had none, which is an anomaly on
  UCSD Ped1 (walking on the grass) and normal here; and with the background map added (a background fixed
  at calibration, against real light and shadows).

Each fold trains for about 8 minutes on 2 cores. The figures printed are this machine's, from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

TRAIN_FRAMES = 480  # 48 s at 10 frames/s
CLIP_S = 4.0
# The test clips, from the test part's frames: 12 s as recorded; 3 s, 4 s at twice the speed (20 frames of
# 40), 3 s; 2 s, 5.5 s at three times (19 frames of 55), 2 s. Labelled: the frames that moved faster.
NORMAL, RUN2, RUN3 = range(0, 120), range(120, 220), range(220, 315)
TRAIN_SET = ["--set", "data.size=[144,192]", "--set", "data.val_fraction=0.25", "--set", "training.epochs=16",
             "--set", "training.prior_epochs=16"]  # fmt: skip
FOLDS = {"first": (0, TRAIN_FRAMES), "last": (795 - TRAIN_FRAMES, 795)}
# Re-calibrations of each fold's run (``edge-ad calibrate --set``): no per-pixel statistics, blurred wider, the
# background map added.
VARIANTS = {
    "global": ["scoring.normalise=global"],
    "sigma48": ["scoring.pixel_stats_sigma=48"],
    "background": ["scoring.weights={residual@motion: 1.0, residual@frame: 0.5, speed: 0.75, background: 0.75}"],
}
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "synthetic.yaml"


def _edge_ad(*args: str) -> str:
    cmd = [sys.executable, "-m", "edge_ad.cli.main", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if done.returncode != 0:
        raise SystemExit(f"edge-ad {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def _stamp(video: Path) -> dict[str, Any]:
    st = video.stat()
    return {"video": str(video.resolve()), "bytes": st.st_size, "mtime": st.st_mtime}


def _frames(video: Path, out: Path) -> tuple[list[Path], bool]:
    """The whole recording as one folder of frames, by our own importer (one clip as long as the file), and
    whether it was there already from the same file. Imported beside ``out`` and renamed when complete, so an
    interrupted import is never taken for a finished one."""
    stamp = out / "source.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == _stamp(video):
        return sorted((out / "Train" / "Train001").glob("*.png")), True
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _edge_ad("data", "import", str(video), "--out", str(partial), "--clip-seconds", "100000")
    (partial / "source.json").write_text(json.dumps(_stamp(video)))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return sorted((out / "Train" / "Train001").glob("*.png")), False


def _sped_up(span: range, factor: int, lead: int, tail: int) -> list[int]:
    """Source frames of a clip that plays ``span`` as recorded for ``lead`` frames, ``factor`` times as fast,
    then as recorded for ``tail`` frames."""
    return [*span[:lead], *range(span.start + lead, span.stop - tail, factor), *span[len(span) - tail :]]


def labelled(indices: list[int]) -> tuple[int, int] | None:
    """The 1-based range of frames that moved faster than recorded: those more than one source frame after
    the frame before them (a frame's motion channel is its difference to that frame)."""
    fast = [j + 1 for j in range(1, len(indices)) if indices[j] - indices[j - 1] > 1]
    return (fast[0], fast[-1]) if fast else None


def make_fold(frames: list[Path], train: tuple[int, int], root: Path) -> Path:
    """Train/ from the training span (clips of 4 s), Test/ from the rest, a UCSD*.m with the labels."""
    shutil.rmtree(root, ignore_errors=True)
    per_clip = round(CLIP_S * 10)
    for k, start in enumerate(range(train[0], train[1], per_clip), start=1):
        _copy(frames[start : min(start + per_clip, train[1])], root / "Train" / f"Train{k:03d}")
    rest = frames[: train[0]] + frames[train[1] :]
    clips = [list(NORMAL), _sped_up(RUN2, 2, 30, 30), _sped_up(RUN3, 3, 20, 20)]
    lines = [f"% {frames[0].parent}: test clips of real footage; Test002 and Test003 hold a sped-up stretch"]
    for k, indices in enumerate(clips, start=1):
        _copy([rest[i] for i in indices], root / "Test" / f"Test{k:03d}")
        gt = labelled(indices)
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{'' if gt is None else f'{gt[0]}:{gt[1]}'}];")
    (root / "UCSDreal.m").write_text("\n".join(lines) + "\n")
    return root


def _copy(frames: list[Path], folder: Path) -> None:
    """Hard links where the file system allows: the recording as PNG frames is half a gigabyte."""
    folder.mkdir(parents=True)
    for i, f in enumerate(frames, start=1):
        try:
            os.link(f, folder / f"{i:03d}.png")
        except OSError:
            shutil.copy(f, folder / f"{i:03d}.png")


def _summary(report: Path) -> dict[str, Any]:
    r = json.loads(report.read_text())
    out: dict[str, Any] = {}
    for name, m in r["methods"].items():
        out[name] = {"frame_auroc": m["frame_auroc"]}
        if (a := r["alerts"].get(name)) is not None:
            out[name].update({k: a[k] for k in ("threshold", "anomalies", "alerted", "early", "false")})
            out[name]["normal_minutes"] = a["normal_minutes"]
    return out


def run_fold(name: str, frames: list[Path], out: Path, config: Path, reuse: bool) -> dict[str, Any]:
    data, run = make_fold(frames, FOLDS[name], out / f"data_{name}"), out / f"run_{name}"
    if not (reuse and (run / "calibration.json").is_file()):
        shutil.rmtree(run, ignore_errors=True)
        _edge_ad("train", "--config", str(config), "--data", str(data), "--out", str(run), *TRAIN_SET)
    _edge_ad("eval", "--run", str(run), "--data", str(data), "--out", str(out / f"eval_{name}"))
    result = {"default": _summary(out / f"eval_{name}" / "report.json")}
    for variant, overrides in VARIANTS.items():
        copy, report = out / f"run_{name}_{variant}", out / f"eval_{name}_{variant}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run, copy)
        _edge_ad("calibrate", "--run", str(copy), "--data", str(data), *(a for o in overrides for a in ("--set", o)))
        _edge_ad("eval", "--run", str(copy), "--data", str(data), "--out", str(report), "--no-baselines")
        result[variant] = _summary(report / "report.json")
    return result


def report(results: dict[str, Any], command: str) -> str:
    lines = [
        "fold   method                                               frame AUROC  alerted  false  early  threshold"
    ]
    for fold, variants in results.items():
        for variant, methods in variants.items():
            for method, m in methods.items():
                if variant != "default" and method != "edge-ad":
                    continue
                label = method if variant == "default" else f"{method} ({', '.join(VARIANTS[variant])})"
                alerts = ""
                if "alerted" in m:
                    alerts = (
                        f"{m['alerted']}/{m['anomalies']:<5} {m['false']:>5}  {m['early']:>5}  {m['threshold']:9.3f}"
                    )
                lines.append(f"{fold:<6} {label:<52} {100 * m['frame_auroc']:11.1f}  {alerts}")
    lines.append(f"reproduce: {command}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="vtest.avi (apt install opencv-doc)")
    parser.add_argument("--out", required=True, help="working folder: datasets, runs, reports")
    parser.add_argument("--config", default=str(CONFIG), help="training config (default: configs/synthetic.yaml)")
    parser.add_argument("--folds", nargs="+", choices=sorted(FOLDS), default=sorted(FOLDS))
    parser.add_argument("--reuse", action="store_true", help="keep runs already trained in --out (evaluate again)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    frames, same_video = _frames(Path(args.video), out / "whole")
    if len(frames) != 795:
        raise SystemExit(
            f"{args.video} gives {len(frames)} frames at 10 frames/s; the folds are laid out for vtest.avi's 795"
        )
    reuse = args.reuse and same_video  # runs trained on another recording are trained again
    results = {fold: run_fold(fold, frames, out, Path(args.config), reuse) for fold in args.folds}
    command = f"python -m benchmarks.real_footage --video {args.video} --out {args.out} --folds {' '.join(args.folds)}"
    (out / "real_footage.json").write_text(json.dumps({"results": results, "command": command}, indent=2))
    print(report(results, command))


if __name__ == "__main__":
    main()
