"""Sources on real files: frame folders, videos, the ffmpeg pipe decoder, pacing, looping, and bad inputs."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.config import StreamConfig
from edge_ad.errors import UserError
from edge_ad.runtime.metrics import RuntimeMetrics
from edge_ad.runtime.sources import Capture, FfmpegReader, SourceError, gstreamer_available, make_reader
from edge_ad.runtime.status import StatusBoard


def board_for(stream: str) -> StatusBoard:
    board = StatusBoard(RuntimeMetrics("test", "onnxruntime", "0"), watchdog_s=5.0)
    board.add(stream, live=False)
    return board


def capture(stream: StreamConfig, board: StatusBoard, **kw: object) -> list:
    reader = make_reader(stream, grayscale=True, stall_s=5.0)
    cap = Capture(stream.name, reader, board, threading.Event(), **kw)
    return list(cap.frames())


def write_video(path: Path, n: int, fps: float = 25.0, hw: tuple[int, int] = (80, 96)) -> list[np.ndarray]:
    """A lossless FFV1 AVI, so decoded frames can be compared exactly."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (hw[1], hw[0]), False)
    frames = []
    for i in range(n):
        f = np.full(hw, 30 + 7 * i, np.uint8)
        cv2.circle(f, (10 + 4 * i, hw[0] // 2), 6, 255, -1)
        writer.write(f)
        frames.append(f)
    writer.release()
    return frames


def test_frames_folder_in_numeric_order_with_a_corrupt_frame_skipped(tmp_path: Path) -> None:
    clip = tmp_path / "Test001"
    clip.mkdir()
    for n in (1, 2, 3, 10):  # lexical order would put 10 before 2
        cv2.imwrite(str(clip / f"{n}.tif"), np.full((20, 30), n, np.uint8))
    (clip / "3.tif").write_bytes(b"II*\x00 truncated")  # frame 3 is undecodable
    (clip / "notes.txt").write_text("ignored")
    board = board_for("c")
    frames = capture(StreamConfig(name="c", source=str(clip), kind="frames"), board, pace="max")
    assert [int(f.image[0, 0]) for f in frames] == [1, 2, 10]
    assert [f.index for f in frames] == [0, 1, 3]  # the corrupt frame keeps its number
    assert all(f.stream == "c" for f in frames)
    assert (
        board.metrics.registry.get_sample_value("edge_ad_frames_dropped_total", {"stream": "c", "reason": "corrupt"})
        == 1.0
    )


def test_frames_folder_is_read_as_training_reads_it(tmp_path: Path) -> None:
    """The dataset reader's listing and decoding: macOS resource forks (``._001.tif``, as archives packed on
    a Mac carry) are not frames, and a 16-bit frame is scaled to 8 bits as training saw it."""
    import tifffile

    clip = tmp_path / "Test001"
    clip.mkdir()
    tifffile.imwrite(clip / "001.tif", np.full((20, 30), 65535, np.uint16))
    cv2.imwrite(str(clip / "002.tif"), np.full((20, 30), 7, np.uint8))
    (clip / "._001.tif").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    board = board_for("c")
    frames = capture(StreamConfig(name="c", source=str(clip), kind="frames"), board, pace="max")
    assert [(f.image.dtype, int(f.image[0, 0])) for f in frames] == [(np.uint8, 255), (np.uint8, 7)]
    dropped = board.metrics.registry.get_sample_value(
        "edge_ad_frames_dropped_total", {"stream": "c", "reason": "corrupt"}
    )
    assert not dropped


def test_video_file_decodes_every_frame(tmp_path: Path) -> None:
    written = write_video(tmp_path / "clip.avi", 12)
    frames = capture(
        StreamConfig(name="v", source=str(tmp_path / "clip.avi"), kind="video"), board_for("v"), pace="max"
    )
    assert [f.index for f in frames] == list(range(12))
    gray = [cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY) if f.image.ndim == 3 else f.image for f in frames]
    assert max(int(np.abs(g.astype(int) - w).max()) for g, w in zip(gray, written, strict=True)) <= 2


def test_realtime_pace_follows_the_file_fps_and_max_does_not(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", 9, fps=40.0)
    stream = StreamConfig(name="v", source=str(tmp_path / "clip.avi"), kind="video")
    t0 = time.monotonic()
    capture(stream, board_for("v"), pace="realtime")
    realtime = time.monotonic() - t0
    t0 = time.monotonic()
    capture(stream, board_for("v"), pace="max")
    fast = time.monotonic() - t0
    assert realtime >= 8 / 40.0 * 0.95  # 9 frames at 40 fps span 8 intervals
    assert fast < realtime


def test_a_file_faster_than_the_model_gives_the_frames_at_its_rate(tmp_path: Path) -> None:
    """30 frames/s for a 10 frames/s model: every third frame, the others counted as decimated, not lost;
    a looped file's second pass keeps the same frames; without a rate every frame is scored."""
    write_video(tmp_path / "clip.avi", 9, fps=30.0)
    stream = StreamConfig(name="v", source=str(tmp_path / "clip.avi"), kind="video", loop=True)
    board = board_for("v")
    frames = capture(stream, board, pace="max", loop=True, max_frames=6, rate=10.0)
    assert [f.index for f in frames] == [0, 3, 6, 9, 12, 15]
    assert board.streams["v"].decimated == 10  # two of each three frames, the last pass cut by max_frames
    assert board.metrics.registry.get_sample_value("edge_ad_frames_decimated_total", {"stream": "v"}) == 10
    assert [f.index for f in capture(stream, board_for("v"), pace="max", rate=None)] == list(range(9))
    write_video(tmp_path / "ten.avi", 9, fps=10.0)
    at_rate = StreamConfig(name="v", source=str(tmp_path / "ten.avi"), kind="video")
    assert [f.index for f in capture(at_rate, board_for("v"), pace="max", rate=10.0)] == list(range(9))


def test_a_files_rate_can_be_given_when_its_container_lies(tmp_path: Path) -> None:
    """A 10 frames/s recording whose container says 30: the stream's fps is believed instead, so no frame is
    decimated, and realtime pacing follows it."""
    write_video(tmp_path / "clip.avi", 6, fps=30.0)
    stream = StreamConfig(name="v", source=str(tmp_path / "clip.avi"), kind="video", fps=10.0)
    board = board_for("v")
    t0 = time.monotonic()
    frames = capture(stream, board, pace="realtime", rate=10.0)
    assert [f.index for f in frames] == list(range(6)) and board.streams["v"].decimated == 0
    assert time.monotonic() - t0 >= 5 / 10.0 * 0.95


def test_loop_restarts_the_file_and_numbers_keep_growing(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", 5)
    stream = StreamConfig(name="v", source=str(tmp_path / "clip.avi"), kind="video", loop=True)
    frames = capture(stream, board_for("v"), pace="max", loop=True, max_frames=12)
    assert [f.index for f in frames] == list(range(12))
    assert np.array_equal(frames[0].image, frames[5].image)


def test_ffmpeg_pipe_decoder_gives_exact_frames_and_reports_the_end(tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    written = write_video(tmp_path / "clip.avi", 8)
    reader = FfmpegReader(str(tmp_path / "clip.avi"), grayscale=True, stall_s=5.0)
    reader.open()
    try:
        got = [reader.read() for _ in range(8)]
        with pytest.raises(SourceError, match="ffmpeg stopped"):
            reader.read()
    finally:
        reader.close()
    for g, w in zip(got, written, strict=True):
        assert g is not None and g.dtype == np.uint8 and np.array_equal(g, w)
    colour = FfmpegReader(str(tmp_path / "clip.avi"), grayscale=False, stall_s=5.0)
    colour.open()
    try:
        image = colour.read()
    finally:
        colour.close()
    assert image is not None and image.shape == (80, 96, 3)


def test_a_stalled_ffmpeg_pipe_is_reported_after_the_watchdog(tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    # A FIFO nobody writes to: ffmpeg waits for data forever, so the read must give up on its own.
    import os

    fifo = tmp_path / "stall"
    os.mkfifo(fifo)
    reader = FfmpegReader(str(fifo), grayscale=True, stall_s=0.5, open_timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="no frame"):
        reader.open()  # a connection counts only once a frame arrives
    assert time.monotonic() - t0 < 6.0
    assert reader._proc is None  # the failed attempt's ffmpeg is gone


@pytest.mark.parametrize(
    ("kind", "source", "message"),
    [
        ("camera", "7", "/dev/video7 does not exist"),
        ("camera", "/dev/video-nope", "/dev/video-nope does not exist"),
        ("camera", "/dev/null", "/dev/null is not a video device"),  # a character device, not video4linux
        ("camera", "notes.txt", "notes.txt is not a video device"),  # once retried for ever
        ("url", "ftp://example.org/x", "unsupported URL"),
        ("url", "no-scheme", "unsupported URL"),
        ("video", "missing.mp4", "video not found"),
        ("frames", "missing-dir", "frames folder not found"),
    ],
)
def test_bad_sources_are_user_errors(kind: str, source: str, message: str, tmp_path: Path) -> None:
    if kind == "camera" and source == "7" and Path("/dev/video7").exists():
        pytest.skip("this machine has a /dev/video7")
    if kind in ("video", "frames") or source == "notes.txt":
        source = str(tmp_path / source)
        if source.endswith("notes.txt"):
            Path(source).write_text("not a camera")
    with pytest.raises(UserError, match=message):
        make_reader(StreamConfig(name="s", source=source, kind=kind), grayscale=True, stall_s=1.0)


def test_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is text, not video")
    with pytest.raises(UserError, match="not a video OpenCV can decode"):
        make_reader(StreamConfig(name="s", source=str(bad), kind="video"), grayscale=True, stall_s=1.0)


def test_frames_folder_problems(tmp_path: Path) -> None:
    (tmp_path / "Test" / "Test001").mkdir(parents=True)
    with pytest.raises(UserError, match="holds folders, not frames: pass one clip"):
        make_reader(StreamConfig(name="s", source=str(tmp_path / "Test"), kind="frames"), True, 1.0)
    with pytest.raises(UserError, match="no frames in"):
        make_reader(StreamConfig(name="s", source=str(tmp_path / "Test" / "Test001"), kind="frames"), True, 1.0)


def test_gstreamer_without_gstreamer_support_says_so() -> None:
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(UserError, match="no GStreamer support"):
        make_reader(StreamConfig(name="s", source="videotestsrc ! appsink", kind="gstreamer"), True, 1.0)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=60)


def _moving_frames(n: int, hw: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, hw, dtype=np.uint8)  # detail, so that each frame is a few packets
    return [np.roll(texture, 3 * i, axis=1) for i in range(n)]


def _dropped(board: StatusBoard, stream: str) -> float:
    value = board.metrics.registry.get_sample_value(
        "edge_ad_frames_dropped_total", {"stream": stream, "reason": "corrupt"}
    )
    return value or 0.0


def test_a_video_cut_short_counts_the_frames_its_header_declares(tmp_path: Path) -> None:
    """A copy interrupted halfway: the AVI header still says 40 frames; until 2026-12-07 the other 25 were
    lost without a word."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96), False)
    for f in _moving_frames(40):
        writer.write(f)
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    board = board_for("v")
    frames = capture(StreamConfig(name="v", source=str(path), kind="video"), board, pace="max")
    assert 5 < len(frames) < 30
    assert [f.index for f in frames] == list(range(len(frames)))
    assert len(frames) + _dropped(board, "v") == 40


def test_frames_a_damaged_stream_loses_keep_their_place(tmp_path: Path) -> None:
    """8 KB of a transport stream zeroed: the demuxer drops the frames there and says nothing; their
    timestamps show the gap, so the frames after it keep their numbers and the loss is counted."""
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(_moving_frames(40)):
        cv2.imwrite(str(src / f"{i:03d}.png"), f)
    path = tmp_path / "clip.ts"
    _ffmpeg("-framerate", "10", "-i", str(src / "%03d.png"), "-c:v", "mpeg2video", "-q:v", "2", str(path))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = bytes(8192)
    path.write_bytes(bytes(data))
    board = board_for("v")
    frames = capture(StreamConfig(name="v", source=str(path), kind="video"), board, pace="max")
    indices = [f.index for f in frames]
    assert len(frames) < 40 and indices[-1] == 39 and indices == sorted(set(indices))
    assert len(frames) + _dropped(board, "v") == 40


def test_damaged_frames_in_a_row_are_all_named(tmp_path: Path) -> None:
    clip = tmp_path / "Test001"
    clip.mkdir()
    for n in range(1, 5):
        cv2.imwrite(str(clip / f"{n:03d}.png"), np.full((20, 30), n, np.uint8))
    for n in (2, 3):
        (clip / f"{n:03d}.png").write_bytes(b"\x89PNG torn")
    reader = make_reader(StreamConfig(name="s", source=str(clip), kind="frames"), grayscale=True, stall_s=1.0)
    reader.open()
    assert int(reader.read()[0, 0]) == 1 and reader.skipped == 0
    assert int(reader.read()[0, 0]) == 4 and reader.skipped == 2
    assert reader.skip_reason.endswith("002.png, 003.png could not be decoded")  # once, only the last was named
    assert reader.read() is None and reader.skipped == 0


def test_healthy_files_of_other_shapes_lose_nothing(tmp_path: Path, variable_rate_video: Path) -> None:
    """A variable-rate recording (30 frames/s, then 15) and an MKV whose audio outlasts its video are whole:
    at most the one frame at the rate's drop is miscounted, and no tail is reported missing."""
    vfr, longer = variable_rate_video, tmp_path / "audio.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=128x96:rate=10:duration=4", "-f", "lavfi", "-i",
            "sine=duration=6", "-pix_fmt", "yuv420p", str(longer))  # fmt: skip
    for path, frames, tolerated in ((vfr, 120, 1), (longer, 40, 0)):
        board = board_for("v")
        got = capture(StreamConfig(name="v", source=str(path), kind="video"), board, pace="max")
        assert len(got) == frames and _dropped(board, "v") <= tolerated, path.name
