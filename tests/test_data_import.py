"""``edge-ad data import``: real video files written with OpenCV, cut into clip folders the dataset reader opens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.importer import import_recordings
from edge_ad.data.ucsd import open_ucsd, read_image
from edge_ad.errors import UserError


def _write_video(path: Path, n: int, fps: float, size: tuple[int, int] = (48, 64)) -> Path:
    """Frame i carries i in binary, one 8x8 block a bit (JPEG keeps black and white blocks apart), so a
    written frame tells which source frame it was."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(n):
        frame = np.zeros((*size, 3), np.uint8)
        for bit in range(7):
            frame[:8, 8 * bit : 8 * bit + 8] = 255 * ((i >> bit) & 1)
        writer.write(frame)
    writer.release()
    return path


def _index(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(7) if image[:8, 8 * bit : 8 * bit + 8].mean() > 128)


def _source_frames(clip_dir: Path) -> list[int]:
    return [_index(read_image(p)) for p in sorted(clip_dir.glob("*.png"))]


def test_a_30_fps_recording_becomes_10_fps_clips(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "cam.avi", n=90, fps=30.0)
    summary = import_recordings([video], tmp_path / "data", fps=10.0, clip_seconds=1.0)
    assert summary.clips == ["Train001", "Train002", "Train003"] and summary.frames == 30 and summary.read == 90
    train = tmp_path / "data" / "Train"
    assert _source_frames(train / "Train001") == list(range(0, 30, 3))  # every third frame, from the first
    assert _source_frames(train / "Train003") == list(range(60, 90, 3))
    dataset = open_ucsd(tmp_path / "data")
    assert [len(c) for c in dataset.train] == [10, 10, 10] and dataset.frame_shape == (48, 64, 3)


def test_a_25_fps_recording_keeps_the_frame_at_or_after_each_tick(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "cam.avi", n=25, fps=25.0)
    import_recordings([video], tmp_path / "data", fps=10.0, clip_seconds=10.0)
    # ticks every 0.1 s: frames 0 (0 s), 3 (0.12 s), 5 (0.2 s), 8 (0.32 s), ...
    assert _source_frames(tmp_path / "data" / "Train" / "Train001") == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23]


def test_more_footage_is_numbered_after_the_clips_already_there(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "cam.avi", n=20, fps=10.0)
    import_recordings([video], tmp_path / "data", fps=10.0, clip_seconds=1.0)
    later = import_recordings([tmp_path], tmp_path / "data", fps=10.0, clip_seconds=2.0)  # a folder of videos
    assert later.clips == ["Train003"] and _source_frames(later.split_dir / "Train003") == list(range(20))


def test_test_clips_and_a_resize(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "cam.avi", n=25, fps=10.0)
    summary = import_recordings([video], tmp_path / "data", split="test", clip_seconds=1.0, size=(24, 32))
    assert summary.clips == ["Test001", "Test002", "Test003"] and summary.frames == 25
    assert read_image(tmp_path / "data" / "Test" / "Test002" / "001.png").shape == (24, 32, 3)


def test_no_clip_spans_damaged_frames(tmp_path: Path) -> None:
    """A dropped stretch in the middle: the difference across it would be motion that never happened."""
    video = _write_video(tmp_path / "cam.avi", n=20, fps=10.0)
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    for k in (8, 9):
        data[starts[k] : starts[k] + 200] = bytes(200)
    video.write_bytes(bytes(data))
    summary = import_recordings([video], tmp_path / "data", clip_seconds=100.0)
    assert summary.skipped == 2 and summary.clips == ["Train001", "Train002"]
    train = tmp_path / "data" / "Train"
    assert _source_frames(train / "Train001") == list(range(8))
    assert _source_frames(train / "Train002") == list(range(10, 20))


def test_a_12_fps_recording_keeps_its_clips_whole(tmp_path: Path) -> None:
    """Resampled spacing is uneven (one or two source frames): that is not a gap."""
    video = _write_video(tmp_path / "cam.avi", n=60, fps=12.0)
    summary = import_recordings([video], tmp_path / "data", fps=10.0, clip_seconds=5.0)
    assert summary.clips == ["Train001"] and summary.frames == 50
    kept = _source_frames(tmp_path / "data" / "Train" / "Train001")
    assert kept[:7] == [0, 1, 2, 4, 5, 6, 7] and set(np.diff(kept)) == {1, 2}


def test_every_recording_is_checked_before_a_frame_is_written(tmp_path: Path) -> None:
    """A folder with a 10 and a 5 frames/s recording: refused whole, so a second try does not duplicate."""
    (tmp_path / "rec").mkdir()
    _write_video(tmp_path / "rec" / "a.avi", n=10, fps=10.0)
    _write_video(tmp_path / "rec" / "b.avi", n=10, fps=5.0)
    with pytest.raises(UserError, match="b.avi runs at 5 frames/s"):
        import_recordings([tmp_path / "rec"], tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_two_cameras_in_one_import_are_refused(tmp_path: Path) -> None:
    a = _write_video(tmp_path / "a.avi", n=10, fps=10.0)
    b = _write_video(tmp_path / "b.avi", n=10, fps=10.0, size=(96, 128))
    with pytest.raises(UserError, match=r"b.avi gives 128x96 frames but .*a.avi is 64x48"):
        import_recordings([a, b], tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_the_camera_size_is_read_from_test_clips_too(tmp_path: Path) -> None:
    import_recordings([_write_video(tmp_path / "a.avi", n=10, fps=10.0)], tmp_path / "data", split="test")
    with pytest.raises(UserError, match="data's clips are 64x48"):
        import_recordings([_write_video(tmp_path / "b.avi", n=10, fps=10.0, size=(96, 128))], tmp_path / "data")


def test_another_cameras_size_is_refused_and_size_matches_it(tmp_path: Path) -> None:
    import_recordings([_write_video(tmp_path / "a.avi", n=10, fps=10.0)], tmp_path / "data", clip_seconds=1.0)
    other = _write_video(tmp_path / "b.avi", n=10, fps=10.0, size=(96, 128))
    with pytest.raises(UserError, match=r"gives 128x96 frames but .*data's clips are 64x48"):
        import_recordings([other], tmp_path / "data")
    more = import_recordings([other], tmp_path / "data", clip_seconds=1.0, size=(48, 64))
    assert more.clips == ["Train002"]


def test_the_cli_prints_what_it_wrote(tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    video = _write_video(tmp_path / "cam.avi", n=60, fps=30.0)
    code, out, _ = cli(["data", "import", str(video), "--out", str(tmp_path / "d"), "--clip-seconds", "1"])
    assert code == 0, out
    assert "wrote 2 clips, 20 frames at 10 frames/s (2.0 s)" in out and "read 60 frames from 1 recording at 30" in out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"recording .*nope.avi does not exist"),
        ("device", r"/dev/null is neither a file nor a folder"),
        ("frames", r"is a folder of frames, already in the layout's form"),
        ("slow", r"runs at 5 frames/s, below --fps 10: import at --fps 5"),
        ("out_is_file", r"--out .* is a file"),
        ("zero_fps", r"--fps 0 is not a frame rate"),
        ("nan_fps", r"--fps nan is not a frame rate"),
        ("short_clips", r"--clip-seconds 0.5: give 1 s or more"),
        ("nan_source", r"--source-fps nan is not a frame rate"),
        ("no_size", r"--size 0x0: both sides must be at least 1 px"),
        ("one_frame_clips", r"--clip-seconds 1 at --fps 1 is under 2 frames a clip"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]], case: str, message: str
) -> None:
    import re

    video = _write_video(tmp_path / "cam.avi", n=10, fps=5.0 if case == "slow" else 10.0)
    out = tmp_path / "data"
    source = str(video)
    extra: list[str] = []
    if case == "missing":
        source = str(tmp_path / "nope.avi")
    elif case == "device":
        source = "/dev/null"
    elif case == "frames":
        (tmp_path / "frames").mkdir()
        cv2.imwrite(str(tmp_path / "frames" / "001.png"), np.zeros((8, 8), np.uint8))
        source = str(tmp_path / "frames")
    elif case == "out_is_file":
        out.write_text("x")
    else:
        extra = {
            "zero_fps": ["--fps", "0"],
            "nan_fps": ["--fps", "nan"],
            "short_clips": ["--clip-seconds", "0.5"],
            "nan_source": ["--source-fps", "nan"],
            "no_size": ["--size", "0x0"],
            "one_frame_clips": ["--fps", "1", "--clip-seconds", "1"],
        }.get(case, [])
    code, stdout, err = cli(["data", "import", source, "--out", str(out), *extra])
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(message, lines[0]), err


def test_a_damaged_first_frame_in_the_dataset_does_not_stop_an_import(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "cam.avi", n=20, fps=10.0)
    import_recordings([video], tmp_path / "data", fps=10.0, clip_seconds=1.0)
    first = tmp_path / "data" / "Train" / "Train001" / "001.png"
    first.write_bytes(first.read_bytes()[:40])  # truncated: the camera's size is read off the next frame
    later = import_recordings([video], tmp_path / "data", fps=10.0, clip_seconds=1.0)
    assert later.clips == ["Train003", "Train004"]
    other = _write_video(tmp_path / "other.avi", n=10, fps=10.0, size=(32, 64))
    with pytest.raises(UserError, match="one camera"):
        import_recordings([other], tmp_path / "data", fps=10.0, clip_seconds=1.0)


def test_a_clip_an_interrupted_import_left_half_written_is_not_a_clip(tmp_path: Path) -> None:
    """Frames are written into a hidden folder renamed to the clip at its end; once they went into the clip
    folder itself, and a Ctrl-C left a short clip that the next import numbered past and kept."""
    video = _write_video(tmp_path / "a.avi", n=10, fps=10.0)
    import_recordings([video], tmp_path / "data", clip_seconds=1.0)
    killed = tmp_path / "data" / "Train" / ".Train002.partial"
    killed.mkdir()
    cv2.imwrite(str(killed / "001.png"), np.zeros((48, 64), np.uint8))
    assert [c.name for c in open_ucsd(tmp_path / "data").train] == ["Train001"]
    again = import_recordings([video], tmp_path / "data", clip_seconds=1.0)
    assert again.clips == ["Train002"] and not killed.exists()
    assert [len(c) for c in open_ucsd(tmp_path / "data").train] == [10, 10]


def test_test_clips_imported_into_a_labelled_dataset_ask_for_their_label_lines(tmp_path: Path) -> None:
    data = tmp_path / "data"
    video = _write_video(tmp_path / "a.avi", n=10, fps=10.0)
    assert import_recordings([video], data, split="test").label_file is None  # no label file: nothing to add
    (data / "UCSDped1.m").write_text("TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [2:4];\n")
    summary = import_recordings([video], data, split="test")
    assert summary.label_file == data / "UCSDped1.m"
    assert "add a line for each new clip" in summary.describe()


def test_a_variable_rate_recording_is_not_read_as_damaged(tmp_path: Path, variable_rate_video: Path) -> None:
    """30 frames/s for 2 s, then 15: the average rate once made every other frame of the slow part a
    "damaged" gap, and the import stepped over and dropped most of it."""
    summary = import_recordings([variable_rate_video], tmp_path / "data", fps=10.0, clip_seconds=2.0)
    assert summary.read == 120 and summary.skipped <= 1
