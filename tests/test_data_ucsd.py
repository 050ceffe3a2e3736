"""The UCSD layout reader on hand-made trees and on a small synthetic scene."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from edge_ad.data.footage import footage_clips
from edge_ad.data.synth import make_scene
from edge_ad.data.ucsd import natural_key, open_ucsd, read_image
from edge_ad.errors import UserError
from edge_ad.training.frames import check_frame_sizes


def _frames(folder: Path, n: int, ext: str = ".tif", shape: tuple[int, ...] = (12, 16), start: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        img = np.full(shape, i % 256, np.uint8)
        assert cv2.imwrite(str(folder / f"{i}{ext}"), img)


def _masks(folder: Path, on: list[bool], shape: tuple[int, int] = (12, 16)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, flag in enumerate(on, start=1):
        m = np.zeros(shape, np.uint8)
        if flag:
            m[2:5, 3:7] = 255
        assert cv2.imwrite(str(folder / f"{i:03d}.bmp"), m)


def _m_file(path: Path, lines: list[str]) -> None:
    path.write_text("TestVideoFile = {};\n" + "\n".join(lines) + "\n")


def test_numeric_order_of_clips_and_frames(tmp_path: Path) -> None:
    for name in ("Train10", "Train2", "Train1"):
        _frames(tmp_path / "Train" / name, 11)
    (tmp_path / "Train" / "._Train3").mkdir()
    (tmp_path / "Train" / ".hidden").mkdir()
    (tmp_path / "Train" / "Train1" / "._5.tif").write_bytes(b"resource fork")
    ds = open_ucsd(tmp_path)
    assert [c.name for c in ds.train] == ["Train1", "Train2", "Train10"]
    names = [p.name for p in ds.train[0].frame_paths]
    assert names[:3] == ["1.tif", "2.tif", "3.tif"] and names[-2:] == ["10.tif", "11.tif"]
    frames = ds.train[0].load_frames()
    assert frames.shape == (11, 12, 16) and frames.dtype == np.uint8
    assert frames[:, 0, 0].tolist() == list(range(1, 12))  # read in numeric order
    assert ds.test == [] and ds.gt_file is None and ds.frame_shape == (12, 16)
    assert natural_key("Test2_gt") < natural_key("Test10")


def test_png_frames_colour_and_masks_for_some_clips(tmp_path: Path) -> None:
    _frames(tmp_path / "Train" / "Train001", 4, ".png", (12, 16, 3))
    for i in (1, 2, 3):
        _frames(tmp_path / "Test" / f"Test{i:03d}", 5, ".png", (12, 16, 3))
    _masks(tmp_path / "Test" / "Test002_gt", [False, True, True, False, False])
    _m_file(tmp_path / "Test" / "UCSDped9.m", ["TestVideoFile{end+1}.gt_frame = [1:2];"] * 3)
    (tmp_path / "other.m").write_text("x = 1;\n")
    ds = open_ucsd(tmp_path, require_test_labels=True)
    assert ds.gt_file is not None and ds.gt_file.name == "UCSDped9.m"  # UCSD* wins over other .m files
    assert ds.frame_shape == (12, 16, 3)
    assert ds.test[0].mask_paths is None and ds.test[0].load_masks() is None
    masks = ds.test[1].load_masks()
    assert masks.dtype == bool and masks.shape == (5, 12, 16) and masks[1].sum() == 12
    assert all(c.labels.tolist() == [True, True, False, False, False] for c in ds.test)  # .m wins over masks


def test_labels_from_masks_when_no_m_file(tmp_path: Path) -> None:
    _frames(tmp_path / "Test" / "Test001", 4)
    _frames(tmp_path / "Test" / "Test002", 4)
    _masks(tmp_path / "Test" / "Test001_gt", [False, True, False, True])
    ds = open_ucsd(tmp_path)
    assert ds.test[0].labels.tolist() == [False, True, False, True]
    assert ds.test[1].labels is None
    with pytest.raises(UserError, match="Test002 have no labels"):
        open_ucsd(tmp_path, require_test_labels=True)


def _write_masks(folder: Path, masks: list[np.ndarray], ext: str) -> None:
    folder.mkdir(parents=True)
    for i, m in enumerate(masks, start=1):
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else []
        assert cv2.imwrite(str(folder / f"{i:03d}{ext}"), m, params)


@pytest.mark.parametrize(
    ("ext", "dtype", "background", "anomaly"),
    [
        (".bmp", np.uint8, 0, 255),  # UCSD's own
        (".jpg", np.uint8, 0, 255),  # re-saved as JPEG: ringing around the edges
        (".png", np.uint8, 0, 1),  # label masks of 0 and 1
        (".tif", np.uint16, 0, 1),  # 16 bits of 0 and 1, which 8-bit scaling turns into zeros
        (".png", np.uint16, 0, 65535),
    ],
)
def test_masks_are_read_whatever_values_mark_the_anomaly(
    tmp_path: Path, ext: str, dtype: type, background: int, anomaly: int
) -> None:
    _frames(tmp_path / "Test" / "Test001", 3, shape=(48, 64))
    truth = np.zeros((3, 48, 64), bool)
    truth[1, 10:30, 20:44] = True
    truth[2, 5:25, 8:40] = True
    values = [np.where(t, anomaly, background).astype(dtype) for t in truth]
    _write_masks(tmp_path / "Test" / "Test001_gt", values, ext)
    masks = open_ucsd(tmp_path).test[0].load_masks()
    assert not masks[0].any()
    wrong = np.count_nonzero(masks != truth)
    assert wrong <= (0.01 * truth.sum() if ext == ".jpg" else 0)


def test_instance_and_class_masks_keep_every_object(tmp_path: Path) -> None:
    """Masks whose values are object or class labels (1, 2, ...): each labelled pixel is anomalous."""
    _frames(tmp_path / "Test" / "Test001", 2, shape=(48, 64))
    first, second = np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.uint8)
    first[5:25, 5:25] = 1
    second[5:25, 5:25], second[30:40, 40:60] = 2, 200
    _write_masks(tmp_path / "Test" / "Test001_gt", [first, second], ".png")
    masks = open_ucsd(tmp_path).test[0].load_masks()
    assert masks[0].sum() == 400 and masks[1].sum() == 600


def test_mask_folders_pair_with_clips_whatever_the_case(tmp_path: Path, caplog) -> None:
    for name in ("Test001", "test002"):
        _frames(tmp_path / "Test" / name, 3)
    _masks(tmp_path / "Test" / "Test001_GT", [False, True, False])
    _masks(tmp_path / "Test" / "TEST002_gt", [True, False, False])
    _masks(tmp_path / "Test" / "Test09_gt", [True, True, True])
    ds = open_ucsd(tmp_path)
    assert [c.labels.tolist() for c in ds.test] == [[False, True, False], [True, False, False]]
    assert "mask folder" in caplog.text and "Test09_gt belongs to no test clip" in caplog.text


def test_real_scene_roundtrip(tmp_path: Path) -> None:
    make_scene(tmp_path, n_train=2, n_test=2, frames=30, size=(64, 96))
    ds = open_ucsd(tmp_path, require_test_labels=True)
    assert len(ds.train) == 2 and len(ds.test) == 2 and ds.gt_file.name == "UCSDsynth.m"
    assert ds.frame_shape == (64, 96) and len(ds.train[0]) == 30
    assert all(c.labels.shape == (30,) and c.mask_paths is not None for c in ds.test)


def test_16bit_tiff_is_scaled_to_8bit(tmp_path: Path) -> None:
    img = np.array([[0, 257, 65535], [32896, 1000, 65535]], np.uint16)
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, img)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1, 255], [128, 4, 255]]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: None, "does not exist"),
        (lambda r: (r.mkdir(), (r / "stuff").mkdir()), "not a UCSD-layout dataset: expected Train/TrainNNN"),
        (lambda r: (r.parent.mkdir(exist_ok=True), r.write_text("x")), "is a file"),
        (lambda r: (r / "Train" / "Train001").mkdir(parents=True), "Train001 holds no frames"),
        (lambda r: _frames(r / "UCSDped1" / "Train" / "Train001", 2) or r, "did you mean .*UCSDped1"),
    ],
    ids=["missing", "wrong-layout", "file", "empty-clip", "nested"],
)
def test_layout_errors(tmp_path: Path, build, message: str) -> None:
    root = tmp_path / "data"
    build(root)
    with pytest.raises(UserError, match=message):
        open_ucsd(root)


def test_mask_count_mismatch(tmp_path: Path) -> None:
    _frames(tmp_path / "Test" / "Test003", 5)
    _masks(tmp_path / "Test" / "Test003_gt", [False] * 4)
    with pytest.raises(UserError, match="Test003_gt has 4 masks for 5 frames"):
        open_ucsd(tmp_path)


def test_m_file_clip_count_and_range_mismatch(tmp_path: Path) -> None:
    _frames(tmp_path / "Test" / "Test001", 5)
    _frames(tmp_path / "Test" / "Test002", 5)
    _m_file(tmp_path / "UCSDped1.m", ["TestVideoFile{end+1}.gt_frame = [1:2];"])
    with pytest.raises(UserError, match="lists 1 test clips but Test/ holds 2"):
        open_ucsd(tmp_path)
    _m_file(
        tmp_path / "UCSDped1.m", ["TestVideoFile{end+1}.gt_frame = [1:2];", "TestVideoFile{end+1}.gt_frame = [3:9];"]
    )
    with pytest.raises(UserError, match=r"entry 2 \(Test002\): frames 3:9 exceed the clip's 5 frames"):
        open_ucsd(tmp_path)


def test_m_file_syntax_error_names_line(tmp_path: Path) -> None:
    _frames(tmp_path / "Test" / "Test001", 5)
    (tmp_path / "UCSDped1.m").write_text("% header\nTestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [1:3;\n")
    with pytest.raises(UserError, match=r"UCSDped1.m line 3: unbalanced"):
        open_ucsd(tmp_path)


def test_unreadable_and_odd_frames(tmp_path: Path) -> None:
    clip = tmp_path / "Train" / "Train001"
    _frames(clip, 3)
    (clip / "2.tif").write_bytes(b"II*\x00 this is not really a tiff")
    assert open_ucsd(tmp_path).train[0].stand_ins == []  # listing does not read frames
    with pytest.raises(UserError, match=r"cannot decode image .*2\.tif"):
        read_image(clip / "2.tif")
    _frames(clip, 1, shape=(12, 16), start=2)
    _frames(clip, 1, shape=(10, 16), start=3)
    with pytest.raises(UserError, match=r"3\.tif is 10x16 gray but 1\.tif is 12x16 gray"):
        open_ucsd(tmp_path).train[0].load_frames()


def _truncated_tiff(path: Path, keep: float) -> None:
    """A TIFF cut short, as UCSD Ped1 v1p2 ships ``Test017/142.tif``: header intact, pixels missing."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_damaged_frame_is_stood_in_for_so_labels_stay_aligned(tmp_path: Path, caplog) -> None:
    clip = tmp_path / "Test" / "Test017"
    clip.mkdir(parents=True)
    for i in range(1, 7):  # uncompressed 8-bit TIFFs like UCSD's, each frame its own grey level
        tifffile.imwrite(clip / f"{i:03d}.tif", np.full((158, 238), 10 * i, np.uint8))
    _truncated_tiff(clip / "001.tif", 0.6)
    _truncated_tiff(clip / "004.tif", 0.6)
    _truncated_tiff(clip / "005.tif", 0.3)
    _m_file(tmp_path / "Test" / "UCSDped1.m", ["TestVideoFile{end+1}.gt_frame = [5:6];"])
    ds = open_ucsd(tmp_path)
    test = ds.test[0]
    assert ds.frame_shape == (158, 238)  # read off the first frame that decodes
    with caplog.at_level("WARNING"):
        frames = test.load_frames()
    assert frames.shape == (6, 158, 238)
    assert [int(f[0, 0]) for f in frames] == [20, 20, 30, 30, 30, 60]  # the start: the first that decodes
    assert test.stand_ins == [0, 3, 4]
    assert test.labels.tolist() == [False] * 4 + [True] * 2  # frame i is still label i
    assert "clip Test017: 3 frame(s) do not decode (001.tif, 004.tif, 005.tif" in caplog.text


def test_a_clip_with_no_frame_that_decodes_is_a_user_error(tmp_path: Path) -> None:
    clip = tmp_path / "Train" / "Train001"
    _frames(clip, 2)
    for f in clip.iterdir():
        f.write_bytes(b"II*\x00 damaged")
    ds = open_ucsd(tmp_path)
    with pytest.raises(UserError, match=r"no frame of clip Train001 decodes .*replace them"):
        ds.train[0].load_frames()
    with pytest.raises(UserError, match="no frame of clip Train001 decodes"):
        assert ds.frame_shape


def test_a_damaged_first_frame_does_not_stop_what_needs_only_the_size(tmp_path: Path) -> None:
    for name in ("Train001", "Train002"):
        _frames(tmp_path / "Train" / name, 4)
    first = tmp_path / "Train" / "Train001" / "1.tif"
    first.write_bytes(first.read_bytes()[:60])
    clips = open_ucsd(tmp_path).train
    check_frame_sizes(clips)  # one camera: the size is read off the first frame that decodes
    (footage,) = footage_clips(tmp_path / "Train" / "Train001")  # normal footage for calibration, too
    assert (footage.height, footage.width, footage.length) == (12, 16, 4)
    for f in (tmp_path / "Train" / "Train001").iterdir():
        f.write_bytes(b"II*\x00 damaged")
    with pytest.raises(UserError, match=r"no frame of .*Train001 decodes"):
        footage_clips(tmp_path / "Train" / "Train001")
