"""The CLI as users meet it: `edge-ad run` and `subscribe` shut down cleanly on signals, and bad input on any
command gets one line saying what is wrong, a non-zero exit and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from edge_ad.cli.main import main
from edge_ad.runtime.alerts import read_journal

CLI = [sys.executable, "-m", "edge_ad.cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clip(tiny_scene: Path, tmp_path: Path) -> Path:
    out = tmp_path / "clip"
    shutil.copytree(tiny_scene / "Test" / "Test001", out)
    return out


def user_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one `edge-ad: error:` line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("edge-ad: error: "), err
    return err[0]


def run_args(bundle: Path, tmp_path: Path, *sources: str) -> list[str]:
    return ["run", "--bundle", str(bundle), *sources, "--endpoint", f"tcp://127.0.0.1:{free_port()}",
            "--metrics-port", "0", "--journal", str(tmp_path / "journal")]  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_run_within_two_seconds_with_the_journal_flushed(
    signum: int, tiny_bundle: Path, clip: Path, tmp_path: Path
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt_string(zmq.SUBSCRIBE, "alert.")
    sub.connect(endpoint)
    journal = tmp_path / "journal"
    proc = subprocess.Popen(
        [*CLI, "run", "--bundle", str(tiny_bundle), "--frames", str(clip), "--loop", "--pace", "realtime",
         "--endpoint", endpoint, "--metrics-port", "0", "--journal", str(journal),
         "--set", "runtime.alerts.threshold=1e-12", "--set", "runtime.wait_subscribers=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert sub.poll(60_000), "no alert from the running process"
        topic, header, _ = sub.recv_multipart()
        assert json.loads(header)["event"] == "start"
        t0 = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(linger=0)
        ctx.term()
    assert proc.returncode == 0, err
    assert elapsed < 5.0, f"took {elapsed:.2f} s to stop"
    events = read_journal(journal / "alerts.jsonl")
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "end"
    assert events[-1]["alert_id"] == events[0]["alert_id"]
    assert "done: clip stopped" in err


def test_an_unreachable_url_keeps_retrying_until_asked_to_stop(tiny_bundle: Path, tmp_path: Path) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/nobody"
    proc = subprocess.Popen(
        [*CLI, *run_args(tiny_bundle, tmp_path, "--url", url), "--set", "runtime.reconnect_initial_s=0.05",
         "--set", "runtime.reconnect_max_s=0.1", "--set", "runtime.status_every_s=0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        time.sleep(3.0)
        assert proc.poll() is None, "gave up on a URL that may come back"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and time.monotonic() - t0 < 2.0
    # Said once, not at every retry; the status line carries the attempts.
    assert err.count(f"cannot open {url}; retrying") == 1, err
    assert "url0 reconnecting:" in err
    status = [line for line in err.splitlines() if "url0 reconnecting" in line]
    assert status and int(status[-1].split("reconnects ")[1].split()[0]) >= 5


def test_a_whole_run_never_imports_torch(tiny_bundle: Path, clip: Path, tmp_path: Path) -> None:
    """An edge box installs the base package only: `edge-ad run` and `subscribe` must work without torch."""
    code = (
        "import sys\n"
        "from edge_ad.cli.main import main\n"
        "try:\n"
        f"    main({run_args(tiny_bundle, tmp_path, '--frames', str(clip))!r} + ['--pace', 'max'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "import edge_ad.runtime.subscribe, edge_ad.runtime.backends.onnxruntime\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    msg = user_error(["run", "--bundle", str(tmp_path / "nope"), "--camera", "0"], capsys)
    assert "bundle not found" in msg


def test_camera_that_does_not_exist(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if Path("/dev/video7").exists():
        pytest.skip("this machine has a /dev/video7")
    msg = user_error(run_args(tiny_bundle, tmp_path, "--camera", "7"), capsys)
    assert "camera 7: /dev/video7 does not exist" in msg


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (["--video", "missing.avi"], "video not found"),
        (["--frames", "missing"], "frames folder not found"),
        (["--url", "gopher://x"], "unsupported URL"),
    ],
)
def test_bad_sources(
    source: list[str], message: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if source[0] != "--url":
        source = [source[0], str(tmp_path / source[1])]
    assert message in user_error(run_args(tiny_bundle, tmp_path, *source), capsys)


def test_no_source_and_wrong_names(
    tiny_bundle: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert "no source" in user_error(run_args(tiny_bundle, tmp_path), capsys)
    msg = user_error([*run_args(tiny_bundle, tmp_path, "--frames", str(clip)), "--name", "a", "--name", "b"], capsys)
    assert "2 --name for 1 source(s)" in msg
    msg = user_error([*run_args(tiny_bundle, tmp_path, "--frames", str(clip)), "--name", "a.b"], capsys)
    assert "stream names are letters" in msg


def test_zeromq_port_in_use(tiny_bundle: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = run_args(tiny_bundle, tmp_path, "--frames", str(clip))
        argv[argv.index("--endpoint") + 1] = f"tcp://127.0.0.1:{port}"
        msg = user_error(argv, capsys)
    assert f"tcp://127.0.0.1:{port} is already in use" in msg and "--endpoint" in msg


def test_metrics_port_in_use(tiny_bundle: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = run_args(tiny_bundle, tmp_path, "--frames", str(clip))
        argv[argv.index("--metrics-port") + 1] = str(port)
        msg = user_error(argv, capsys)
    assert f"metrics port 127.0.0.1:{port} is already in use" in msg


def test_gstreamer_stream_from_a_config(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import cv2

    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    config = tmp_path / "streams.yaml"
    config.write_text(
        "runtime:\n  streams:\n    - {name: gate, kind: gstreamer, source: 'videotestsrc ! videoconvert ! appsink'}\n"
    )
    msg = user_error([*run_args(tiny_bundle, tmp_path), "--config", str(config)], capsys)
    assert "no GStreamer support" in msg and "PyPI wheels" in msg


def test_subscribe_gives_up_after_its_timeout(capsys: pytest.CaptureFixture) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    msg = user_error(["subscribe", "--endpoint", endpoint, "--timeout", "0.3"], capsys)
    assert f"no message from {endpoint} for 0.3 s" in msg


def test_a_replay_with_not_one_decodable_frame_is_an_error(
    tiny_bundle: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for frame in clip.iterdir():
        frame.write_bytes(b"not a tif")
    with pytest.raises(SystemExit) as exit_info:
        main(run_args(tiny_bundle, tmp_path, "--frames", str(clip), "--pace", "max"))
    assert exit_info.value.code == 2
    assert "not one frame could be decoded" in capsys.readouterr().err


def test_a_config_that_is_not_text_or_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    binary = tmp_path / "clip.mp4"
    binary.write_bytes(bytes(range(256)) * 8)
    assert "not a text file" in user_error(["config", "show", str(binary)], capsys)
    assert "is a folder" in user_error(["config", "show", str(tmp_path)], capsys)


@pytest.mark.parametrize("damaged", ["calibration.json", "split.json"])
def test_a_damaged_run_file_is_named(
    damaged: str, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / damaged).write_text('{"threshold": ')
    argv = ["export", "--run", str(run), "--out", str(tmp_path / "b")] if damaged == "calibration.json" else []
    argv = argv or ["calibrate", "--run", str(run)]
    assert f"{run / damaged} is damaged" in user_error(argv, capsys)


def test_an_output_path_through_a_file(
    tiny_run: Path, tiny_bundle: Path, tiny_scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    assert "is a file" in user_error(["export", "--run", str(tiny_run), "--out", str(afile)], capsys)
    under = str(afile / "sub")
    assert "a file is in the way" in user_error(
        ["synth", under, "--train", "1", "--test", "0", "--frames", "4"], capsys
    )
    msg = user_error(["eval", "--bundle", str(tiny_bundle), "--data", str(tiny_scene), "--out", under, "--clips", "1",
                      "--no-baselines"], capsys)  # fmt: skip
    assert "a file is in the way" in msg


def test_a_negative_seed_leaves_nothing_behind(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "scene"
    assert "--seed" in user_error(["synth", str(out), "--seed", "-1", "--train", "1", "--test", "0"], capsys)
    assert not out.exists()


def test_subscriber_keys_that_cannot_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    server_public, _ = zmq.curve_keypair()
    base = ["subscribe", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.3"]
    msg = user_error([*base, "--server-key", server_public.decode(), "--client-key", str(tmp_path / "nope")], capsys)
    assert "is not a file" in msg
    junk = tmp_path / "client.key_secret"
    junk.write_text("not a certificate")
    assert "not a zmq certificate" in user_error(
        [*base, "--server-key", server_public.decode(), "--client-key", str(junk)], capsys
    )
    assert "needs --server-key" in user_error([*base, "--client-key", str(junk)], capsys)


def test_a_hand_edited_manifest(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["input"]["size"] = "abc"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert "corrupt manifest (input.size: Input should be a valid tuple)" in user_error(
        run_args(bundle, tmp_path, "--camera", "0"), capsys
    )


def test_paths_of_the_wrong_kind_are_named_as_such(
    tiny_run: Path, tiny_bundle: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frame = next(clip.iterdir())
    assert "run directory not found" in user_error(["calibrate", "--run", str(tmp_path / "nope")], capsys)
    assert "is a folder; --video" in user_error(run_args(tiny_bundle, tmp_path, "--video", str(clip)), capsys)
    assert "is a file; --frames" in user_error(run_args(tiny_bundle, tmp_path, "--frames", str(frame)), capsys)
    msg = user_error(run_args(tiny_bundle, tmp_path, "--url", "rtsp://127.0.0.1:9/x", "--hwaccel", "cuda"), capsys)
    assert "--hwaccel needs --decoder ffmpeg" in msg
    out = tmp_path / "bundle"
    msg = user_error(["export", "--run", str(tiny_run), "--out", str(out), "--data", str(tmp_path / "nope")], capsys)
    assert "is not a folder" in msg and not out.exists()
    msg = user_error(
        run_args(tiny_bundle, tmp_path, "--frames", str(tmp_path))[:-4] + ["--metrics-port", "99999"], capsys
    )
    assert msg.startswith("edge-ad: error: --metrics-port 99999: ")  # the flag, not the --set it became
    msg = user_error(run_args(tiny_bundle, tmp_path, "--frames", str(tmp_path), "--name", "a b"), capsys)
    assert "the sources on the command line" in msg and "{" not in msg
    argv = ["eval", "--bundle", str(tiny_bundle), "--data", str(tmp_path), "--set", "scoring.topk_fraction=0.5"]
    assert "eval replays only runtime.alerts.* options" in user_error(argv, capsys)  # it changed nothing


def test_a_certificate_with_a_malformed_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    server_public, _ = zmq.curve_keypair()
    cert = tmp_path / "client.key_secret"
    cert.write_text('metadata\ncurve\n    public-key = "abc"\n    secret-key = "abc"\n')
    argv = ["subscribe", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.3",
            "--server-key", server_public.decode(), "--client-key", str(cert)]  # fmt: skip
    assert "malformed" in user_error(argv, capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--data", "x", "--run", "x", "--clips", "0"],
        ["export", "--run", "x", "--out", "y", "--batch", "0"],
        ["bench", "--bundle", "x", "--batch", "0"],
        ["bench", "--bundle", "x", "--frames", "-5"],
        ["subscribe", "--timeout", "-1"],
    ],
)
def test_counts_out_of_range_are_refused_before_anything_runs(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "greater than or equal to" in capsys.readouterr().err


def test_calibrate_asks_for_data_when_the_split_names_none(tiny_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    split = json.loads((run / "split.json").read_text())
    (run / "split.json").write_text(json.dumps({k: v for k, v in split.items() if k != "data_root"}))
    assert "pass --data: " in user_error(["calibrate", "--run", str(run)], capsys)  # once a KeyError
