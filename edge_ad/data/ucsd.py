"""The UCSD anomaly dataset layout: ``Train/TrainNNN/*.tif``, ``Test/TestNNN/*.tif``, optional ``TestNNN_gt`` masks.

Our synthetic scenes are written in the same layout, so one reader serves the real benchmark, the synthetic
tests and any user footage exported as frame folders. Opening a dataset only lists files (and reads masks
where labels must come from them); frames are read when a clip is used.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge_ad.data.mfile import GtEntry, ranges_to_labels, read_gt_entries
from edge_ad.errors import UserError

IMAGE_EXTENSIONS = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".pgm"})
LAYOUT_HINT = "expected Train/TrainNNN/*.tif and/or Test/TestNNN/*.tif (UCSD layout)"

log = logging.getLogger(__name__)


class DamagedImage(UserError):
    """An image file that is there but does not decode (truncated, overwritten): a clip can stand a
    neighbouring frame in for it, where a missing or unreadable path stays an error."""


def natural_key(name: str) -> tuple:
    """Sort key that orders numbers by value: Train2 before Train10, 2.tif before 10.tif."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def name_list(names: list[str], shown: int = 5) -> str:
    """File names for a one-line message: the first few, then how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def is_visible(p: Path) -> bool:
    return not p.name.startswith(".")  # also drops macOS ._* resource forks


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if is_visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """16-bit and float images scaled to the full 8-bit range; alpha dropped; HxWx1 squeezed."""
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    x = img.astype(np.float64)
    if np.issubdtype(img.dtype, np.floating) and np.nanmax(x, initial=0.0) <= 1.0:
        x = x * 255.0
    return np.clip(np.nan_to_num(x), 0, 255).round().astype(np.uint8)


@contextmanager
def quiet_decoders() -> Iterator[None]:
    """A corrupt file becomes one UserError line; OpenCV's and tifffile's own complaints would bury it."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    tiff_log = logging.getLogger("tifffile")
    was_disabled, tiff_log.disabled = tiff_log.disabled, True
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)
        tiff_log.disabled = was_disabled


def read_image(path: Path) -> np.ndarray:
    """uint8 HxW (gray) or HxWx3 (BGR), as stored. Reads bytes first so non-ASCII paths work too."""
    return _to_uint8(decode_image(path))


def decode_image(path: Path) -> np.ndarray:
    """The image's own values and dtype (a 16-bit mask of 0 and 1 must not be scaled to 0 and 0)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from None
    img = None
    if data.size:
        with quiet_decoders():
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            if img is None and path.suffix.lower() in {".tif", ".tiff"}:
                img = _read_tiff_fallback(path)
    if img is None or img.size == 0 or img.ndim not in (2, 3):
        raise DamagedImage(f"cannot decode image {path}: the file is corrupt or not an image; replace it")
    return img


def first_decodable(paths: list[Path]) -> np.ndarray | None:
    """The first of ``paths`` that decodes, or None: what needs only a folder's frame size should not stop
    at a damaged file that the readers of its frames step over or stand a neighbour in for."""
    found = _first_decodable_at(paths)
    return None if found is None else found[1]


def _first_decodable_at(paths: list[Path]) -> tuple[int, np.ndarray] | None:
    for i, path in enumerate(paths):
        try:
            return i, read_image(path)
        except DamagedImage:
            continue
    return None


def _read_tiff_fallback(path: Path) -> np.ndarray | None:
    """Some TIFF flavours (odd compressions, multi-sample layouts) that OpenCV rejects still open in tifffile."""
    import tifffile

    try:
        img = np.asarray(tifffile.imread(path))
    except Exception:
        return None
    while img.ndim > 3:  # multi-page: keep the first page
        img = img[0]
    if img.ndim == 3 and img.shape[2] in (3, 4):  # tifffile gives RGB(A); we keep OpenCV's BGR everywhere
        img = np.ascontiguousarray(img[:, :, 2::-1])
    return img


@dataclass
class Clip:
    name: str
    split: Literal["train", "test"]
    frame_paths: list[Path]
    labels: np.ndarray | None = None  # bool [T], test clips only
    mask_paths: list[Path] | None = None
    kinds: tuple[str, ...] = ()  # the anomaly kinds its label line names (``mfile.GtEntry``), if any
    stand_ins: list[int] = field(default_factory=list)  # frames load_frames replaced (0-based), damaged files

    def __len__(self) -> int:
        return len(self.frame_paths)

    def first_frame(self) -> np.ndarray:
        """The first frame that decodes (``first_decodable``)."""
        frame = first_decodable(self.frame_paths)
        if frame is None:
            raise self._all_damaged()
        return frame

    def _all_damaged(self) -> UserError:
        where = self.frame_paths[0].parent if self.frame_paths else self.name
        return UserError(f"no frame of clip {self.name} decodes ({where}): its files are damaged; replace them")

    def load_frames(self) -> np.ndarray:
        """[T, H, W] or [T, H, W, 3] uint8; a clip is one camera, so a frame of another size is an error.

        A frame whose file does not decode is replaced by the frame before it (after it, at the clip's
        start), so that frame i is still label i: UCSD Ped1 v1p2 ships a truncated ``Test017/142.tif``,
        and dropping it would shift every later label by one. ``stand_ins`` lists the replaced frames and
        a warning names them; only a clip with no decodable frame is an error."""
        found = _first_decodable_at(self.frame_paths)
        if found is None:
            raise self._all_damaged()
        good, first = found
        out = np.empty((len(self),) + first.shape, dtype=np.uint8)  # decoded into place: one copy of the clip
        self.stand_ins = list(range(good))
        out[: good + 1] = first
        for i in range(good + 1, len(self)):
            try:
                img = read_image(self.frame_paths[i])
            except DamagedImage:
                self.stand_ins.append(i)
                out[i] = out[i - 1]
                continue
            if img.shape != first.shape:
                raise UserError(
                    f"{self.frame_paths[i]} is {_shape_text(img)} but {self.frame_paths[good].name} is "
                    f"{_shape_text(first)}; all frames of clip {self.name} must have one size and colour"
                )
            out[i] = img
        if self.stand_ins:
            log.warning("warning: %s", self.stand_in_note())
        return out

    def stand_in_note(self) -> str:
        """One line on the frames ``load_frames`` replaced, by the file names a user would look for."""
        names = [self.frame_paths[i].name for i in self.stand_ins]
        shown = name_list(names)
        kept = "the labels stay aligned" if self.split == "test" else "the clip keeps its timing"
        return (
            f"clip {self.name}: {len(names)} frame(s) do not decode ({shown}, damaged files); the frame before "
            f"each (at the start, the first that decodes) stands in, so {kept}; replace the files to use them"
        )

    def load_masks(self) -> np.ndarray | None:
        """bool [T, H, W], or None when the clip has no mask folder.

        A pixel is anomalous where its mask is above 0, read at the mask's own bit depth (8-bit scaling
        would turn a 16-bit mask of 0 and 1 into zeros), so binary, label and instance-ID masks all read
        as drawn. JPEG masks ring around their edges: theirs are read above half the clip's brightest value."""
        if self.mask_paths is None:
            return None
        raw = [_mask_values(decode_image(p)) for p in self.mask_paths]
        lossy = any(p.suffix.lower() in LOSSY_EXTENSIONS for p in self.mask_paths)
        level = max(float(m.max()) for m in raw) / 2.0 if lossy else 0.0
        masks = [m > level for m in raw]
        shape = masks[0].shape
        for p, m in zip(self.mask_paths, masks, strict=True):
            if m.shape != shape:
                raise UserError(
                    f"mask {p} is {m.shape[0]}x{m.shape[1]} but {self.mask_paths[0].name} is "
                    f"{shape[0]}x{shape[1]}; all masks of clip {self.name} must have one size"
                )
        return np.stack(masks)


# Image formats whose compression changes pixel values: a mask saved so is no longer two-valued.
LOSSY_EXTENSIONS = {".jpg", ".jpeg"}


def _mask_values(img: np.ndarray) -> np.ndarray:
    """HxW: the brightest colour channel (a mask may be drawn in any colour), alpha dropped."""
    if img.ndim == 3:
        img = img[:, :, :3].max(axis=2) if img.shape[2] >= 3 else img[:, :, 0]
    return img


def _shape_text(img: np.ndarray) -> str:
    return f"{img.shape[0]}x{img.shape[1]}" + (f"x{img.shape[2]}" if img.ndim == 3 else " gray")


@dataclass
class UCSDDataset:
    root: Path
    train: list[Clip]
    test: list[Clip]
    gt_file: Path | None
    _shape: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def clips(self) -> list[Clip]:
        return self.train + self.test

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame (H, W) or (H, W, 3), read from the first clip's first frame."""
        if self._shape is None:
            self._shape = self.clips[0].first_frame().shape
        return self._shape


def find_child(folder: Path, name: str) -> Path | None:
    """``Train`` or ``train``: the layout is case-insensitive because archives get re-packed on other systems."""
    for p in folder.iterdir():
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def clip_dirs(split_dir: Path | None) -> list[Path]:
    if split_dir is None:
        return []
    dirs = [p for p in split_dir.iterdir() if p.is_dir() and is_visible(p) and not p.name.lower().endswith("_gt")]
    return sorted(dirs, key=lambda p: natural_key(p.name))


def find_gt_file(root: Path, test_dir: Path | None) -> Path | None:
    """The ``.m`` label file at the root or in Test/; among several, prefer one named UCSD*."""
    candidates: list[Path] = []
    for folder in (root, test_dir):
        if folder is not None:
            candidates += sorted((p for p in folder.glob("*.m") if is_visible(p) and p.is_file()), key=lambda p: p.name)
    if not candidates:
        return None
    preferred = [p for p in candidates if p.name.lower().startswith("ucsd")]
    return (preferred or candidates)[0]


def _read_clip(folder: Path, split: Literal["train", "test"]) -> Clip:
    frames = list_images(folder)
    if not frames:
        exts = "/".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
        raise UserError(f"clip folder {folder} holds no frames ({exts}); add its frames or remove the folder")
    return Clip(name=folder.name, split=split, frame_paths=frames)


def mask_dirs(test_dir: Path | None) -> dict[str, Path]:
    """``TestNNN_gt`` folders by the lower-cased name of the clip they belong to (``Test001_GT`` too: the
    layout is case-insensitive, as ``find_child`` says)."""
    if test_dir is None:
        return {}
    found = [p for p in test_dir.iterdir() if p.is_dir() and is_visible(p) and p.name.lower().endswith("_gt")]
    return {p.name[: -len("_gt")].lower(): p for p in sorted(found, key=lambda p: p.name)}


def _attach_masks(clip: Clip, mask_dir: Path | None) -> None:
    if mask_dir is None:
        return
    masks = list_images(mask_dir)
    if len(masks) != len(clip):
        raise UserError(
            f"{mask_dir.name} has {len(masks)} masks for {len(clip)} frames of {clip.name}; "
            "every frame needs one mask (or remove the folder)"
        )
    clip.mask_paths = masks


def _attach_labels(test: list[Clip], gt: list[GtEntry | None] | None, gt_file: Path | None) -> None:
    if gt is not None and len(gt) != len(test):
        raise UserError(
            f"{gt_file} lists {len(gt)} test clips but Test/ holds {len(test)}; "
            "they must match one to one, in clip order"
        )
    for i, clip in enumerate(test):
        entry = gt[i] if gt is not None else None
        if entry is not None:
            clip.labels = ranges_to_labels(entry.ranges, len(clip), f"{gt_file} entry {i + 1} ({clip.name})")
            clip.kinds = entry.kinds
        elif clip.mask_paths is not None:
            masks = clip.load_masks()
            clip.labels = masks.reshape(len(masks), -1).any(axis=1)


def _layout_error(root: Path) -> UserError:
    """Point at a nested dataset (``UCSD_Anomaly_Dataset.v1p2/UCSDped1``) when the user gave its parent."""
    nested = [p for p in sorted(root.iterdir(), key=lambda p: natural_key(p.name)) if p.is_dir() and is_visible(p)]
    nested = [p for p in nested if find_child(p, "Train") or find_child(p, "Test")]
    hint = f"; did you mean {nested[0]}?" if nested else ""
    return UserError(f"{root} is not a UCSD-layout dataset: {LAYOUT_HINT}{hint}")


def open_ucsd(root: str | Path, require_test_labels: bool = False) -> UCSDDataset:
    """List a UCSD-layout folder's clips and attach test labels (from the .m file, else from the masks)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"dataset folder {root} does not exist; {LAYOUT_HINT}")
    if not root.is_dir():
        raise UserError(f"{root} is a file, not a dataset folder; {LAYOUT_HINT}")
    train_dir, test_dir = find_child(root, "Train"), find_child(root, "Test")
    train_dirs, test_dirs = clip_dirs(train_dir), clip_dirs(test_dir)
    if not train_dirs and not test_dirs:
        raise _layout_error(root)
    train = [_read_clip(d, "train") for d in train_dirs]
    test = [_read_clip(d, "test") for d in test_dirs]
    masks = mask_dirs(test_dir)
    for clip in test:
        _attach_masks(clip, masks.pop(clip.name.lower(), None))
    for folder in masks.values():
        log.warning(
            "warning: mask folder %s belongs to no test clip (no clip named %s); rename it or the clip "
            "to pair them, or its masks are not used",
            folder,
            folder.name[: -len("_gt")],
        )
    gt_file = find_gt_file(root, test_dir)
    gt = read_gt_entries(gt_file) if gt_file is not None and test else None
    _attach_labels(test, gt, gt_file)
    if require_test_labels:
        if not test:
            raise UserError(f"{root} has no Test/TestNNN clips to evaluate on; {LAYOUT_HINT}")
        unlabelled = [c.name for c in test if c.labels is None]
        if unlabelled:
            raise UserError(
                f"test clips {', '.join(unlabelled)} have no labels: add a UCSD*.m file with "
                "gt_frame ranges or TestNNN_gt mask folders"
            )
    return UCSDDataset(root=root, train=train, test=test, gt_file=gt_file)
