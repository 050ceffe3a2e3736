"""Replays through the real pipeline with the tiny bundle: every frame published once, alerts journaled then
published, and the Prometheus endpoint telling the same story. A SUB socket is connected before each run
starts and the run waits for its subscription (runtime.wait_subscribers), so nothing is lost to slow joining.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from edge_ad.config import AlertConfig, RuntimeConfig, StreamConfig
from edge_ad.data.preprocess import model_channels
from edge_ad.export.bundle import load_bundle
from edge_ad.runtime.alerts import read_journal
from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend
from edge_ad.runtime.pipeline import Runtime
from edge_ad.runtime.publish import encode_map
from edge_ad.runtime.subscribe import decode_map


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subscriber(endpoint: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt_string(zmq.SUBSCRIBE, "")
    sock.connect(endpoint)
    return ctx, sock


def drain(sock: zmq.Socket, quiet_ms: int = 1500, max_s: float = 30.0) -> list[tuple[str, dict, bytes]]:
    """Everything that arrives until the socket stays quiet for ``quiet_ms`` (or ``max_s`` passed)."""
    messages = []
    end = time.monotonic() + max_s
    while time.monotonic() < end and sock.poll(quiet_ms):
        topic, header, payload = sock.recv_multipart()
        messages.append((topic.decode(), json.loads(header), payload))
    return messages


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def clip_from(scene: Path, name: str, tmp_path: Path) -> Path:
    clip = tmp_path / name
    shutil.copytree(scene / "Test" / name, clip)
    return clip


def edge_ad_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``edge-ad ARGS`` as a user runs it, in its own process."""
    cmd = [sys.executable, "-m", "edge_ad.cli.main", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def model_output(bundle, images: list[np.ndarray]):  # noqa: ANN001, ANN201 (a Bundle in, an InferenceResult out)
    """What the bundle gives for these frames in this order, each with its motion channel to the one before."""
    tensors = np.stack(list(model_channels(images, bundle.input_size, bundle.grayscale, bundle.temporal_offsets)))
    return OnnxRuntimeBackend(bundle).infer(tensors)


def check_stream_messages(messages: list[tuple[str, dict, bytes]], stream: str, indices: list[int]) -> list:
    """One map per frame in order, and one seq counter per stream with no gap across its topics."""
    mine = [m for m in messages if m[1]["stream"] == stream]
    assert [h["seq"] for _, h, _ in mine] == list(range(len(mine)))
    maps = [m for m in mine if m[0] == f"map.{stream}"]
    assert [h["frame_index"] for _, h, _ in maps] == indices
    return mine


def test_frames_folder_replay(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    clip = clip_from(tiny_scene, "Test001", tmp_path)
    files = sorted(clip.glob("*.tif"))
    files[9].write_bytes(b"II*\x00 a torn copy")  # frame 9 cannot be decoded: skipped and counted
    indices = [i for i in range(len(files)) if i != 9]
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx, sub = subscriber(endpoint)
    bundle = load_bundle(tiny_bundle)
    cfg = RuntimeConfig(
        endpoint=endpoint,
        metrics_port=0,
        journal_dir=str(tmp_path / "journal"),
        pace="max",
        max_batch=4,
        wait_subscribers=1,
        # A threshold every frame passes: the alert starts at frame 1 and is closed when the replay ends.
        alerts=AlertConfig(threshold=1e-12, min_frames=2, update_s=1e9),
    )
    runtime = Runtime(bundle, cfg, [StreamConfig(name="ped", source=str(clip), kind="frames")])
    try:
        runtime.start()
        assert runtime.done.wait(60), "the replay did not finish"
        assert runtime.metrics_server is not None
        metrics = scrape(runtime.metrics_server.url + "/metrics")
        with urllib.request.urlopen(runtime.metrics_server.url + "/healthz", timeout=5) as r:
            health = json.loads(r.read())
            assert r.status == 200
    finally:
        runtime.close()
    messages = drain(sub)
    sub.close()
    ctx.term()

    mine = check_stream_messages(messages, "ped", indices)
    maps = [(h, p) for t, h, p in mine if t == "map.ped"]
    h, w = bundle.input_size
    for header, payload in maps:
        assert header["shape"] == [h, w] and header["dtype"] == "uint8" and len(payload) == h * w
        assert header["ts_capture"] <= header["ts_publish"]
    assert maps[0][0]["alert"] is None and maps[-1][0]["alert"] is not None
    assert all(header["map_scale"] == bundle.map_scale for header, _ in maps)

    # The maps are the model's on exactly the frames the file holds, with temporal channels built in capture
    # order over the decodable frames (the torn one is not part of any frame's past).
    images = [cv2.imread(str(files[i]), cv2.IMREAD_UNCHANGED) for i in indices]
    expected = model_output(bundle, images)
    got = np.stack([decode_map(header, payload) for header, payload in maps]).astype(int)
    assert np.abs(got - encode_map(expected.maps, "uint8", bundle.map_scale).astype(int)).max() <= 1
    scores = np.array([header["score"] for header, _ in maps])
    np.testing.assert_allclose(scores, expected.scores, rtol=1e-4, atol=1e-5)

    # Alerts: the journal and the published events are the same events, in the same order.
    journal = read_journal(tmp_path / "journal" / "alerts.jsonl")
    published = [(h, p) for t, h, p in mine if t == "alert.ped"]
    assert [e["event"] for e in journal] == ["start", "end"]
    assert [(e["event"], e["alert_id"], e["frame_index"]) for e in journal] == [
        (h["event"], h["alert_id"], h["frame_index"]) for h, _ in published
    ]
    assert journal[0]["frame_index"] == 1 and journal[1]["frame_index"] == indices[-1]
    for event, (header, jpeg) in zip(journal, published, strict=True):
        snapshot = (tmp_path / "journal" / event["snapshot"]).read_bytes()
        assert snapshot == jpeg
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED).shape[:2]
        assert header["boxes"] == event["boxes"]

    # Prometheus saw the same run.
    assert metrics[("edge_ad_frames_total", (("stream", "ped"),))] == len(indices)
    assert metrics[("edge_ad_frames_dropped_total", (("reason", "corrupt"), ("stream", "ped")))] == 1
    assert metrics[("edge_ad_frames_dropped_total", (("reason", "queue_full"), ("stream", "ped")))] == 0
    assert metrics[("edge_ad_alerts_total", (("stream", "ped"),))] == 1
    assert metrics[("edge_ad_latency_seconds_count", (("stream", "ped"),))] == len(indices)
    assert metrics[("edge_ad_stage_seconds_count", (("stage", "preprocess"),))] == len(indices)
    assert metrics[("edge_ad_stage_seconds_count", (("stage", "inference"),))] >= len(indices) / 4
    build = [k for k in metrics if k[0] == "edge_ad_build_info"]
    assert len(build) == 1 and dict(build[0][1])["backend"] == "onnxruntime"
    assert health["status"] == "ok" and health["streams"]["ped"]["state"] == "finished"


def test_a_stream_that_ends_closes_its_alert_while_the_others_run(
    tiny_bundle: Path, tiny_scene: Path, tmp_path: Path
) -> None:
    """Until 2026-12-07 an ended replay's alert stayed open until every stream had ended: beside a live camera,
    until shutdown, and a crash before it left a start with no end in the journal."""
    short, long = clip_from(tiny_scene, "Test001", tmp_path), clip_from(tiny_scene, "Test002", tmp_path)
    cfg = RuntimeConfig(
        endpoint=f"tcp://127.0.0.1:{free_port()}",
        metrics_port=0,
        journal_dir=str(tmp_path / "journal"),
        max_batch=4,
        alerts=AlertConfig(threshold=1e-12, min_frames=2, update_s=1e9),  # an alert from frame 1 on, in both
    )
    streams = [
        StreamConfig(name="short", source=str(short), kind="frames", pace="max"),
        StreamConfig(name="long", source=str(long), kind="frames", pace="realtime"),  # 48 frames at 10 a second
    ]
    runtime = Runtime(load_bundle(tiny_bundle), cfg, streams)
    journal = tmp_path / "journal" / "alerts.jsonl"
    try:
        runtime.start()
        deadline = time.monotonic() + 3.0
        events: list[tuple[str, str]] = []
        while ("short", "end") not in events and time.monotonic() < deadline:
            time.sleep(0.05)
            events = [(e["stream"], e["event"]) for e in read_journal(journal)] if journal.exists() else []
        assert ("short", "end") in events, events
        assert not runtime.done.is_set() and ("long", "end") not in events  # the other stream still plays
        assert runtime.done.wait(30), "the replay did not finish"
    finally:
        runtime.close()
    events = [(e["stream"], e["event"], e["frame_index"]) for e in read_journal(journal)]
    assert sorted(events) == sorted(
        [("short", "start", 1), ("short", "end", 47), ("long", "start", 1), ("long", "end", 47)]
    )


def test_cli_replays_a_video_and_a_folder_in_one_process(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    frames = sorted((tiny_scene / "Test" / "Test002").glob("*.tif"))
    video = tmp_path / "clip.avi"
    first = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, first.shape[::-1], False)
    for f in frames:
        writer.write(cv2.imread(str(f), cv2.IMREAD_UNCHANGED))
    writer.release()
    folder = clip_from(tiny_scene, "Test003", tmp_path)
    n_folder = len(list(folder.glob("*.tif")))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx, sub = subscriber(endpoint)
    journal = tmp_path / "journal"
    # A second subscriber: `edge-ad subscribe` itself, printing JSON lines.
    cli = [sys.executable, "-m", "edge_ad.cli.main"]
    printer = subprocess.Popen(
        [*cli, "subscribe", "--endpoint", endpoint, "--topic", "map.door", "--count", "5", "--json", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = edge_ad_cli(
        "run", "--bundle", str(tiny_bundle), "--video", str(video), "--frames", str(folder),
        "--name", "door", "--name", "hall", "--pace", "max", "--endpoint", endpoint, "--metrics-port", "0",
        "--journal", str(journal), "--set", "runtime.wait_subscribers=2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    messages = drain(sub)
    sub.close()
    ctx.term()
    out, _ = printer.communicate(timeout=30)
    assert printer.returncode == 0

    check_stream_messages(messages, "door", list(range(len(frames))))
    check_stream_messages(messages, "hall", list(range(n_folder)))
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(m["topic"], m["frame_index"]) for m in lines] == [("map.door", i) for i in range(5)]
    # Frames of another size than the model's: resized, and said once per stream.
    assert run.stderr.count("door: frames are") == 1 and run.stderr.count("hall: frames are") == 1
    assert "resizing" in run.stderr
    assert run.stderr.strip().splitlines()[-1].split(" ", 2)[2].startswith("done: door finished")
    assert (journal / "alerts.jsonl").exists()


def test_a_30_fps_video_is_scored_at_the_models_10(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    """The model learnt motion between frames 0.1 s apart; a 30 frames/s file is scored on every third frame,
    and each map is the model's on those frames, with their motion channel taken between kept frames."""
    frames = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in sorted((tiny_scene / "Test" / "Test002").glob("*.tif"))]
    video = tmp_path / "fast.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 30, frames[0].shape[::-1], False)
    for f in frames:
        writer.write(f)
    writer.release()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx, sub = subscriber(endpoint)
    run = edge_ad_cli(
        "run", "--bundle", str(tiny_bundle), "--video", str(video), "--name", "fast", "--pace", "max",
        "--endpoint", endpoint, "--metrics-port", "0", "--journal", str(tmp_path / "journal"),
        "--set", "runtime.wait_subscribers=1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    messages = drain(sub)
    sub.close()
    ctx.term()
    kept = list(range(0, len(frames), 3))
    mine = check_stream_messages(messages, "fast", kept)
    assert "fast: 30 frames/s; scoring 10 a second, the model's rate" in run.stderr
    bundle = load_bundle(tiny_bundle)
    scores = np.array([h["score"] for t, h, _ in mine if t == "map.fast"])
    expected = model_output(bundle, [frames[i] for i in kept]).scores
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_the_scoring_rate_follows_the_bundle_and_the_config(
    tiny_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5 frames/s file is slower than the model: every frame scored, with a warning. runtime.analysis_fps
    0 scores every frame of anything; another rate than the model's is warned about; a bundle exported
    before ``input.fps`` existed takes the rate from its config."""
    video = tmp_path / "slow.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 96), False)
    for i in range(12):
        writer.write(np.full((96, 128), 20 * i, np.uint8))
    writer.release()
    bundle = load_bundle(tiny_bundle)
    stream = [StreamConfig(name="slow", source=str(video), kind="video")]

    def runtime(**cfg: object) -> Runtime:
        journal = str(tmp_path / "journal")
        return Runtime(bundle, RuntimeConfig(metrics_port=0, journal_dir=journal, pace="max", **cfg), stream)

    slow = runtime(endpoint=f"tcp://127.0.0.1:{free_port()}")
    assert slow.rate == 10.0
    with caplog.at_level("INFO", logger="edge_ad.runtime"):
        assert slow.run(status=lambda line: None) == 0
    assert caplog.text.count("slow: 5 frames/s, below the model's 10") == 1  # said once, not every frame
    assert slow.board.streams["slow"].published == 12 and slow.board.streams["slow"].decimated == 0
    assert runtime(analysis_fps=0).rate is None
    caplog.clear()
    assert runtime(analysis_fps=10.2).rate == 10.2 and "analysis_fps" not in caplog.text  # a rounding: silent
    assert runtime(analysis_fps=25).rate == 25.0 and "runtime.analysis_fps 25 is not the model's 10" in caplog.text
    config = dict(bundle.manifest["config"], scoring=dict(bundle.manifest["config"]["scoring"], assumed_fps=25.0))
    inputs = {k: v for k, v in bundle.manifest["input"].items() if k != "fps"}
    assert type(bundle)(bundle.path, dict(bundle.manifest, input=inputs, config=config)).fps == 25.0


def test_healthz_is_503_until_a_stream_delivers(tiny_bundle: Path, tmp_path: Path) -> None:
    """A URL nobody serves: the runtime keeps retrying, counts it, and says so on /healthz and heartbeats."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    dead = f"rtsp://127.0.0.1:{free_port()}/cam"
    ctx, sub = subscriber(endpoint)
    cfg = RuntimeConfig(
        endpoint=endpoint,
        metrics_port=0,
        journal_dir=str(tmp_path / "journal"),
        reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
        heartbeat_s=0.2,
    )
    runtime = Runtime(load_bundle(tiny_bundle), cfg, [StreamConfig(name="yard", source=dead, kind="url")])
    try:
        runtime.start()
        assert runtime.metrics_server is not None
        deadline = time.monotonic() + 10
        while runtime.board.streams["yard"].reconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(runtime.metrics_server.url + "/healthz", timeout=5)
        assert err.value.code == 503
        body = json.loads(err.value.read())
        assert body["streams"]["yard"]["state"] == "reconnecting" and body["streams"]["yard"]["error"]
        metrics = scrape(runtime.metrics_server.url + "/metrics")
        assert metrics[("edge_ad_source_reconnects_total", (("stream", "yard"),))] >= 2
        beats = [h for t, h, _ in drain(sub, quiet_ms=500, max_s=0.6) if t == "heartbeat.yard"]
        assert beats and beats[-1]["state"] == "reconnecting" and beats[-1]["reconnects"] >= 1
        t0 = time.monotonic()
        runtime.stop()
        assert runtime.done.wait(5.0)
    finally:
        runtime.close()
        sub.close()
        ctx.term()
    assert time.monotonic() - t0 < 5.0
