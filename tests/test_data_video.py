"""Video files and frame folders: real files written with OpenCV, damaged on purpose."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.video import DEFAULT_FPS, iter_folder, iter_video, video_info
from edge_ad.errors import UserError


def _write_mjpg(path: Path, n: int = 20, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))
    writer.release()
    return path


def _damage_frames(path: Path, which: list[int]) -> Path:
    """Wipe the start of chosen JPEG frames, as a dropped packet would."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    for k in which:
        data[starts[k] : starts[k] + 200] = bytes(200)
    out = path.with_name("damaged.avi")
    out.write_bytes(bytes(data))
    return out


def test_reads_frames_with_timestamps(tmp_path: Path) -> None:
    path = _write_mjpg(tmp_path / "clip.avi")
    info = video_info(path)
    assert (info.fps, info.frame_count, info.width, info.height, info.codec) == (10.0, 20, 64, 48, "MJPG")
    assert info.duration == pytest.approx(2.0)
    frames = iter_video(path)
    packets = list(frames)
    assert [p.index for p in packets] == list(range(20)) and frames.skipped == 0
    assert [p.timestamp for p in packets] == pytest.approx([i / 10 for i in range(20)])
    assert packets[7].image.shape == (48, 64, 3) and abs(int(packets[7].image.mean()) - 70) <= 3


def test_skips_and_counts_damaged_frames(tmp_path: Path) -> None:
    path = _damage_frames(_write_mjpg(tmp_path / "clip.avi"), [5, 6, 12])
    frames = iter_video(path)
    packets = list(frames)
    assert frames.skipped == 3
    assert [p.index for p in packets] == [i for i in range(20) if i not in (5, 6, 12)]
    assert packets[5].timestamp == pytest.approx(0.7)  # the frame after the gap keeps its real time
    assert abs(int(packets[5].image.mean()) - 70) <= 3


def test_fps_override_and_context_manager(tmp_path: Path) -> None:
    path = _write_mjpg(tmp_path / "clip.avi", n=5)
    with iter_video(path, fps=5.0) as frames:
        first, second = next(frames), next(frames)
    assert second.timestamp - first.timestamp == pytest.approx(0.2)
    assert list(frames) == []  # closed


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "cannot open .* as a video"),
        (lambda d: d, "is a folder"),
    ],
    ids=["missing", "not-video", "folder"],
)
def test_bad_video_paths(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(UserError, match=message):
        iter_video(make(tmp_path))
    with pytest.raises(UserError, match=message):
        video_info(make(tmp_path))


def test_folder_frames_in_numeric_order_skipping_bad_images(tmp_path: Path) -> None:
    for i in (1, 2, 10, 3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8), i, np.uint8))
    (tmp_path / "4.png").write_bytes(b"not a png")
    (tmp_path / "._1.png").write_bytes(b"resource fork")
    frames = iter_folder(tmp_path, fps=2.0)
    packets = list(frames)
    assert [int(p.image[0, 0]) for p in packets] == [1, 2, 3, 10]
    assert [p.index for p in packets] == [0, 1, 2, 4] and frames.skipped == 1
    assert packets[-1].timestamp == pytest.approx(2.0)
    assert iter_folder(tmp_path).fps == DEFAULT_FPS


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        iter_folder(tmp_path / "nope")
    with pytest.raises(UserError, match="holds no images"):
        iter_folder(tmp_path)
