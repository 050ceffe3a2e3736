"""What a UCSD-layout dataset holds: clips, frames, labels and mask coverage (``edge-ad data info``).

Before training on a folder, or when evaluation numbers look odd, the first question is whether the data is
what one thinks: how many clips, how much of the test set is anomalous, which clips have pixel masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_ad.data.ucsd import Clip, DamagedImage, open_ucsd, quiet_decoders, read_image


def _test_clip_info(clip: Clip) -> dict[str, Any]:
    masks = clip.load_masks()
    coverage, covered = None, 0
    if masks is not None:
        anomalous = masks.reshape(len(masks), -1).any(axis=1)
        if clip.labels is not None:
            anomalous = anomalous & clip.labels
        covered = int(anomalous.sum())
        if covered:
            coverage = float(masks[anomalous].mean())
    return {
        "name": clip.name,
        "frames": len(clip),
        "labelled": clip.labels is not None,
        "anomalous_frames": int(clip.labels.sum()) if clip.labels is not None else None,
        "has_masks": masks is not None,
        "mask_coverage": coverage,  # mean fraction of anomalous pixels in this clip's anomalous frames
        "masked_frames": covered,  # anomalous frames with a non-empty mask, which the coverage is over
        "problems": _clip_problems(clip, masks),
    }


def _clip_problems(clip: Clip, masks) -> list[str]:
    """What eval would refuse in this clip, said here first: labels or masks that do not match its frames."""
    problems = []
    if clip.labels is not None and len(clip.labels) != len(clip):
        problems.append(f"{len(clip.labels)} frame labels for {len(clip)} frames")
    if masks is not None and clip.frame_paths:
        frame = clip.first_frame().shape[:2]
        if len(masks) != len(clip):
            problems.append(f"{len(masks)} masks for {len(clip)} frames")
        if masks.shape[1:3] != frame:
            problems.append(f"masks are {masks.shape[1]}x{masks.shape[2]} but frames are {frame[0]}x{frame[1]}")
    return problems


def frame_problems(clips: list[Clip]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each clip's frame files that do not decode, and those whose size or colour differs from the clip's
    first frame that does, by name: training and evaluation stand the frame before in for the first kind
    (``Clip.load_frames``) and refuse a clip with the second; a user would rather know before a long run."""
    damaged, odd = {}, {}
    with quiet_decoders():
        for clip in clips:
            bad, other, first = [], [], None
            for path in clip.frame_paths:
                try:
                    shape = read_image(path).shape
                except DamagedImage:
                    bad.append(path.name)
                    continue
                first = first or shape
                if shape != first:
                    other.append(f"{path.name} ({'x'.join(map(str, shape))})")
            if bad:
                damaged[clip.name] = bad
            if other:
                odd[clip.name] = other
    return damaged, odd


def _frame_report(clips: list[Clip], check: bool) -> dict[str, Any]:
    damaged, odd = frame_problems(clips) if check else (None, None)
    return {"damaged_frames": damaged, "odd_size_frames": odd}


def dataset_info(root: str | Path, check_frames: bool = False) -> dict[str, Any]:
    """A JSON-ready summary; counts come straight from the .m file and the masks as the reader sees them.
    ``check_frames`` decodes every frame to list the damaged and odd-sized ones (``frame_problems``; None unchecked)."""
    ds = open_ucsd(root)
    tests = [_test_clip_info(c) for c in ds.test]
    labelled = [t for t in tests if t["labelled"]]
    test_frames = sum(t["frames"] for t in tests)
    labelled_frames = sum(t["frames"] for t in labelled)
    anomalous = sum(t["anomalous_frames"] for t in labelled)
    masked = [t for t in tests if t["mask_coverage"] is not None]
    n_masked = sum(t["masked_frames"] for t in masked)
    return {
        "root": str(ds.root),
        "gt_file": str(ds.gt_file) if ds.gt_file else None,
        "frame_shape": list(ds.frame_shape),
        "train": {
            "clips": len(ds.train),
            "frames": sum(len(c) for c in ds.train),
            "clip_frames": {c.name: len(c) for c in ds.train},
        },
        "test": {
            "clips": len(ds.test),
            "frames": test_frames,
            "labelled_clips": len(labelled),
            "anomalous_frames": anomalous,
            "anomalous_fraction": anomalous / labelled_frames if labelled_frames else None,
            "clips_with_masks": sum(t["has_masks"] for t in tests),
            # Pooled over all anomalous frames with masks, so long events weigh as much as they last.
            "mean_mask_coverage": sum(t["mask_coverage"] * t["masked_frames"] for t in masked) / n_masked
            if n_masked
            else None,
            "per_clip": tests,
        },
        **_frame_report(ds.clips, check_frames),
    }


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def render_info(info: dict[str, Any]) -> None:
    """The summary as a rich table, one row per test clip."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    train, test = info["train"], info["test"]
    shape = "x".join(map(str, info["frame_shape"]))
    console.print(f"[bold]{info['root']}[/bold]  frames {shape}  ground truth: {info['gt_file'] or 'none (.m file)'}")
    console.print(f"train: {train['clips']} clips, {train['frames']} frames")
    console.print(
        f"test:  {test['clips']} clips, {test['frames']} frames, {test['labelled_clips']} labelled, "
        f"{test['anomalous_frames']} anomalous ({_pct(test['anomalous_fraction'])}); "
        f"masks for {test['clips_with_masks']} clips, mean coverage {_pct(test['mean_mask_coverage'], 2)}"
    )
    damaged = info["damaged_frames"]
    if damaged is not None:
        n = sum(len(v) for v in damaged.values())
        console.print(
            f"frames checked: {n} damaged" + (" (training and eval stand a neighbour in for each)" if n else "")
        )
        for clip, names in damaged.items():
            console.print(f"  warning: {clip}: cannot decode {', '.join(names)}; replace the files to use those frames")
        for clip, names in (info["odd_size_frames"] or {}).items():
            console.print(
                f"  warning: {clip}: {', '.join(names)} differ in size or colour from its other frames; "
                "training and eval refuse the clip until they match"
            )
    if not test["per_clip"]:
        return
    table = Table(show_edge=False)
    for col, justify in (("clip", "left"), ("frames", "right"), ("anomalous", "right"), ("masks", "center"),
                         ("mask coverage", "right")):  # fmt: skip
        table.add_column(col, justify=justify)
    for t in test["per_clip"]:
        n = t["anomalous_frames"]
        table.add_row(
            t["name"],
            str(t["frames"]),
            "unlabelled" if n is None else f"{n} ({_pct(n / t['frames'], 0)})",
            "yes" if t["has_masks"] else "-",
            _pct(t["mask_coverage"], 2),
        )
    console.print(table)
    for t in test["per_clip"]:
        for problem in t["problems"]:
            console.print(f"warning: {t['name']}: {problem}; edge-ad eval will refuse this clip", soft_wrap=True)
