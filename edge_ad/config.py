"""One config for training, export and the runtime, as YAML validated by pydantic.

Every section forbids unknown keys, so a typo is an error naming the key instead of a silently ignored
setting. ``--set section.key=value`` overrides are parsed as YAML scalars and validated like the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_ad.errors import UserError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """What the model sees: the frame size, colour, and the temporal channels."""

    size: tuple[int, int] = (128, 128)
    grayscale: bool = True
    # Motion channels: for each k, the frame's difference to the frame k steps back. [] = the frame alone.
    temporal_offsets: list[int] = Field(default_factory=list)
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    frame_stride: int = Field(1, ge=1)

    @field_validator("size")
    @classmethod
    def _size_divisible(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 16 or v[0] % 8 or v[1] % 8:
            raise ValueError("both sides must be multiples of 8 and at least 16")
        return v

    @field_validator("temporal_offsets")
    @classmethod
    def _offsets_positive(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError("offsets must be distinct positive frame counts, e.g. [2] or [1, 4]")
        return sorted(v)

    @property
    def colour_channels(self) -> int:
        """Channels of one frame; the model's input is the frame, then one such group per motion offset."""
        return 1 if self.grayscale else 3

    @property
    def in_channels(self) -> int:
        return self.colour_channels * (1 + len(self.temporal_offsets))


class CorruptionConfig(Section):
    """Synthetic corruption of training inputs (Collin and De Vleeschouwer): learn to restore clean frames."""

    enabled: bool = False
    probability: float = Field(0.5, ge=0.0, le=1.0)
    max_patches: int = Field(3, ge=1)
    max_patch_fraction: float = Field(0.25, gt=0.0, le=1.0)


class ModelConfig(Section):
    width: int = Field(64, ge=4)
    res_blocks: int = Field(2, ge=0)
    res_width: int = Field(32, ge=4)
    downsamplings: Literal[2, 3] = 2
    embed_dim: int = Field(32, ge=2)
    n_codes: int = Field(256, ge=2)
    decay: float = Field(0.99, gt=0.0, lt=1.0)
    commitment: float = Field(0.25, ge=0.0)
    dead_code_threshold: float = Field(1.0, ge=0.0)
    recon_loss: Literal["mse", "l1", "cbernoulli"] = "mse"
    ssim_weight: float = Field(0.0, ge=0.0)
    corruption: CorruptionConfig = Field(default_factory=CorruptionConfig)


class PriorConfig(Section):
    """The PixelSNAIL-style prior over the code grid."""

    enabled: bool = True
    channels: int = Field(64, ge=4)
    blocks: int = Field(3, ge=1)
    kernel_size: int = Field(3, ge=2)
    attention: bool = True
    attention_dim: int = Field(32, ge=4)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class TrainingConfig(Section):
    seed: int = Field(0, ge=0, lt=2**63)  # torch takes a seed of 64 bits
    # auto: the first GPU when there is one; else cpu, cuda or cuda:N
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    prior_epochs: int = Field(20, ge=1)
    prior_batch_size: int = Field(64, ge=1)
    prior_lr: float = Field(3e-3, gt=0.0)
    patience: int = Field(5, ge=1)
    max_train_frames: int | None = Field(None, ge=1)
    num_threads: int | None = Field(None, ge=1)


# Maps that compare the input with a reconstruction, channel by channel, and the channel groups they may compare.
CHANNEL_MAPS = frozenset({"residual", "ssim", "ssim_am", "restore", "restore_diff"})
CHANNEL_GROUPS = ("all", "frame", "motion")


class ScoringConfig(Section):
    ssim_window: int = Field(11, ge=3)
    ssim_sigma: float = Field(1.5, gt=0.0)
    am_dilation: int = Field(3, ge=1)
    ssim_dilation: int = Field(1, ge=1)
    # Which input channels the pixel maps (residual, ssim, restore) compare: all of them, the motion
    # (difference) channels only, or the frame only; and how the per-channel maps become one: mean or max.
    compare_channels: Literal["all", "motion", "frame"] = "all"
    channel_reduce: Literal["mean", "max"] = "max"
    # Normalisation of each map before they are combined, from normal validation clips: one median and
    # spread per map (global), or a mean and spread per pixel (pixel), which for a fixed camera discounts
    # the places that are always hard to reconstruct (edges, lamps, a busy doorway).
    normalise: Literal["global", "pixel"] = "global"
    # The same choice for one map, over ``normalise``: per pixel suits a map that is large where walkers pass
    # and small elsewhere (a residual); the prior's NLL is large wherever anything moves, walkers included, and
    # dividing it by its own spread there cancels the very rarity it measures (README, Results).
    normalise_maps: dict[str, Literal["global", "pixel"]] = Field(default_factory=dict)
    # Per-pixel statistics are blurred with this Gaussian (pixels of the model input): a few hundred validation
    # frames see a walker pass only here and there, and the next one walks a little to the side. 24 rather
    # than 12: on twelve synthetic scenes 12 px left gaps where the validation clips had no walker (README).
    pixel_stats_sigma: float = Field(24.0, ge=0.0)
    # Restoration (Wang et al.): a code is unlikely when its NLL is above this quantile of the NLLs seen
    # on normal validation frames.
    restore_quantile: float = Field(0.999, gt=0.5, lt=1.0)
    # Refinement passes of the fast restoration after its first (shared) prior pass, each judging the original
    # codes again in the restored context. 0 by default: on five scenes the fast version's restore map came
    # within 0.0042 pixel AUROC of the exact reference's on average without them, 0.0022 with 16 rounds, a
    # prior pass each; on a run where it missed by 0.0134, four rounds gave 0.0132 (README).
    restore_rounds: int = Field(0, ge=0)
    # Maps and their weights. A map that compares input channels may name its channels after an @ (for
    # example residual@frame and residual@motion, two maps); without one it compares ``compare_channels``.
    weights: dict[str, float] = Field(default_factory=lambda: {"ssim_am": 1.0, "nll": 1.0, "restore": 1.0})
    # How the normalised maps become one: their weighted mean, or their weighted max (one map that is sure is
    # enough: a cart at walking pace shows in the frame channel, a cyclist in the motion channel). Before a
    # max, calibration also scales each map by the spread of its frame score on the validation frames.
    fusion: Literal["mean", "max"] = "mean"
    smoothing_sigma: float = Field(2.0, ge=0.0)
    # Grey dilation (pixels, a stride-1 max-pool) of the published map, after the frame score is taken: a
    # residual lights up an object's edges, the user and the ground truth want the object. The frame score
    # comes before it, since dilation would make a walker's thin outline as large as a cart.
    map_dilation: int = Field(1, ge=1)
    frame_score: Literal["max", "topk"] = "topk"
    topk_fraction: float = Field(0.01, gt=0.0, le=1.0)
    # More areas for the top-k frame score, as fractions of the frame. With any, the frame score is the max
    # over all areas (``topk_fraction`` and these) of each area's top-k mean, standardised on the validation
    # frames (median 0, 99th percentile 1): a far, small anomaly counts at a small area, a large one at a
    # large area, and no area's larger spread on normal frames decides alone. ``topk_fraction`` stays the
    # area that scales each map of a max fusion.
    extra_topk_fractions: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(default_factory=list)
    # The speed map's window (Gaussian sigma, px of the model input): the flow is fitted over about a walker's
    # width, so legs and arms swinging at twice the body's speed count with the body.
    speed_window: float = Field(2.0, gt=0.0)
    false_alarms_per_hour: float = Field(1.0, gt=0.0)
    assumed_fps: float = Field(10.0, gt=0.0)

    def normalisation(self, name: str) -> str:
        """How map ``name`` is normalised: its own entry in ``normalise_maps``, else ``normalise``."""
        return self.normalise_maps.get(name, self.normalise)

    def topk_areas(self) -> list[float]:
        """Every area of the frame score, the reference ``topk_fraction`` first, each once."""
        return list(dict.fromkeys([self.topk_fraction, *self.extra_topk_fractions]))

    @model_validator(mode="after")
    def _areas_need_topk(self) -> ScoringConfig:
        if self.extra_topk_fractions and self.frame_score != "topk":
            raise ValueError("extra_topk_fractions needs frame_score: topk (a max has no area)")
        return self

    @field_validator("weights")
    @classmethod
    def _known_maps(cls, v: dict[str, float]) -> dict[str, float]:
        known = {"residual", "ssim", "am", "ssim_am", "nll", "restore", "restore_diff", "speed", "background"}
        bad = set(v) - known - {f"{m}@{g}" for m in CHANNEL_MAPS for g in CHANNEL_GROUPS}
        if bad:
            raise ValueError(
                f"unknown map(s) {sorted(bad)}; known maps are {sorted(known)}, and "
                f"{'/'.join(sorted(CHANNEL_MAPS))} may name their channels: @{' @'.join(CHANNEL_GROUPS)}"
            )
        if not any(w > 0 for w in v.values()):
            raise ValueError("at least one map needs a positive weight")
        return v

    @model_validator(mode="after")
    def _normalised_maps_are_weighted(self) -> ScoringConfig:
        if stray := sorted(set(self.normalise_maps) - set(self.weights)):
            raise ValueError(
                f"normalise_maps names {stray}, which scoring.weights does not weight; "
                f"the weighted maps are {sorted(self.weights)}"
            )
        return self


class ExportConfig(Section):
    opset: int = Field(17, ge=13, le=20)
    batch: int = Field(1, ge=1)
    max_batch: int = Field(8, ge=1)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    parity_code_agreement: float = Field(0.999, gt=0.0, le=1.0)
    parity_map_atol: float = Field(1e-3, gt=0.0)


class AlertConfig(Section):
    # Multiples of the calibrated threshold: start above `on`, end below `off` (hysteresis).
    on: float = Field(1.0, gt=0.0)
    off: float = Field(0.8, gt=0.0)
    min_frames: int = Field(2, ge=1)
    end_frames: int = Field(5, ge=1)
    cooldown_s: float = Field(2.0, ge=0.0)
    snapshot: bool = True
    # The frame-score threshold `on`/`off` multiply; None = the bundle's calibrated one (tune on site).
    threshold: float | None = Field(None, gt=0.0)
    # While an alert is on, an `update` event (new boxes, snapshot) at most this often, in stream time.
    update_s: float = Field(1.0, gt=0.0)
    # Largest regions kept per event, so a noisy map cannot flood a message.
    max_boxes: int = Field(16, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data: Any) -> Any:
        """YAML 1.1 reads the keys `on:` and `off:` as true and false; take them back as the names they are."""
        if isinstance(data, dict) and any(k is True or k is False for k in data):
            data = {("on" if k is True else "off" if k is False else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _hysteresis(self) -> AlertConfig:
        if self.off > self.on:
            raise ValueError(f"alerts.off ({self.off}) must not be above alerts.on ({self.on})")
        return self


class StreamConfig(Section):
    name: str
    source: str
    kind: Literal["camera", "video", "frames", "url", "gstreamer"]
    pace: Literal["realtime", "max"] | None = None
    loop: bool = False
    # URLs: OpenCV's FFmpeg backend, or an `ffmpeg` subprocess (optionally with `-hwaccel <hwaccel>`).
    decoder: Literal["opencv", "ffmpeg"] = "opencv"
    hwaccel: str | None = None
    # Frames folders have no rate of their own: pace=realtime plays them at this rate (UCSD is 10 fps). For a
    # video file, its rate when the container's is wrong or missing (as `edge-ad data import --source-fps`).
    fps: float | None = Field(None, gt=0.0)

    @field_validator("name")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", v):
            raise ValueError("stream names are letters, digits, '_' and '-' (they end ZeroMQ topics)")
        return v


class RuntimeConfig(Section):
    endpoint: str = "tcp://127.0.0.1:5556"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)
    max_batch: int = Field(8, ge=1)
    latency_budget_ms: float = Field(30.0, ge=0.0)
    queue_size: int = Field(16, ge=1)
    map_dtype: Literal["uint8", "float16"] = "uint8"
    heartbeat_s: float = Field(1.0, gt=0.0)
    sndhwm: int = Field(1000, ge=1)
    journal_dir: str = "alerts"
    reconnect_initial_s: float = Field(0.5, gt=0.0)
    reconnect_max_s: float = Field(10.0, gt=0.0)
    watchdog_s: float = Field(5.0, gt=0.0)
    status_every_s: float = Field(5.0, gt=0.0)
    curve: bool = False
    # CURVE server secret: a zmq certificate file (zmq.auth.create_certificates) or EDGE_AD_CURVE_SECRET_KEY.
    curve_secret_file: str | None = None
    # CURVE: when set, only clients whose public certificates are in this folder may connect.
    curve_clients_dir: str | None = None
    # Replays: wait for this many subscriptions before the first frame, so no subscriber misses the start.
    wait_subscribers: int = Field(0, ge=0)
    wait_subscribers_s: float = Field(10.0, gt=0.0)
    pace: Literal["realtime", "max"] = "realtime"
    # Frames a second scored of each stream; None: the bundle's (scoring.assumed_fps, the rate its motion
    # channel and thresholds were set at), 0: every frame. A faster source gives the frames at that rate.
    analysis_fps: float | None = Field(None, ge=0.0)
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    # ONNX Runtime: execution providers in order of preference ([] = CPU), intra-op threads (None = cores).
    providers: list[str] = Field(default_factory=list)
    threads: int | None = Field(None, ge=1)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    streams: list[StreamConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _curve_named(self) -> RuntimeConfig:
        """A key or an allow-list without ``curve: true`` would publish in plaintext, which its author did not mean."""
        given = [k for k in ("curve_secret_file", "curve_clients_dir") if getattr(self, k)]
        if given and not self.curve:
            raise ValueError(f"{' and '.join(given)} given but curve is off: set runtime.curve: true, or remove them")
        return self

    @model_validator(mode="after")
    def _unique_streams(self) -> RuntimeConfig:
        names = [s.name for s in self.streams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stream names must be unique; repeated: {', '.join(dup)}")
        return self


class Config(Section):
    name: str = "edge-ad"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _latent_fits(self) -> Config:
        factor = 2**self.model.downsamplings
        h, w = self.data.size
        if h % factor or w % factor:
            raise ValueError(f"data.size {h}x{w} must be divisible by {factor} (2^model.downsamplings)")
        if self.scoring.compare_channels == "motion" and not self.data.temporal_offsets:
            raise ValueError("scoring.compare_channels=motion needs motion channels: set data.temporal_offsets")
        motion_maps = [m for m in self.scoring.weights if m.endswith("@motion") or m == "speed"]
        if motion_maps and not self.data.temporal_offsets:
            raise ValueError(f"scoring.weights {motion_maps} need motion channels: set data.temporal_offsets")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _describe(err: ValidationError) -> str:
    """One line per problem: the dotted key and what pydantic says is allowed."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (check the spelling; `edge-ad config show` lists the keys)")
        else:
            parts.append(f"'{key}': {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"bad override '{item}': expected section.key=value, e.g. training.epochs=5")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise UserError(f"bad override '{item}': the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise UserError(f"bad override '{item}': the value is not valid YAML ({e.problem})") from None
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for p in path[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise UserError(f"bad override '{item}': '{p}' is not a section")
            node = child
        node[path[-1]] = value
    return raw


def config_from_dict(
    raw: dict[str, Any],
    source: str = "config",
    overrides: list[str] | None = None,
    flags: dict[str, str] | None = None,
) -> Config:
    """``overrides``: the ones already applied to ``raw``; an error they caused names them, not ``source``
    (``flags``: how the user spelled an override the CLI made from a flag, e.g. ``--metrics-port 99999``)."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{_blame(e, source, overrides or [], flags or {})}: {_describe(e)}") from None


CONFIG_NAMES = "ucsd_ped1, ucsd_ped2, synthetic, tiny"


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys without a word: a second ``training:`` section would silently
    drop the first one's options."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # an odd key: the config's own check names it
            if key in seen:
                raise _DuplicateKey(f"'{key}' appears twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, flags: dict[str, str] | None = None
) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if p.is_dir():
            raise UserError(f"{p} is a folder; give a config file (the configs/ folder has {CONFIG_NAMES})")
        if not p.is_file():
            raise UserError(f"config file not found: {p} (the configs/ folder has {CONFIG_NAMES})")
        try:
            loaded = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
        except UnicodeDecodeError:
            raise UserError(
                f"{p} is not a text file; give a YAML config (the configs/ folder has {CONFIG_NAMES})"
            ) from None
        except _DuplicateKey as e:
            raise UserError(f"{p}: {e}; merge the two into one") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UserError(f"{p}: not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"{p}: expected a mapping of sections (data, model, ...), got {type(loaded).__name__}")
        raw = loaded
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, source, overrides, flags)


def _blame(err: ValidationError, source: str, overrides: list[str], flags: dict[str, str]) -> str:
    """Where the bad values came from: the overrides (a --set, or a flag the CLI turned into one) whose key
    is a bad key, a section above one or a key inside a bad section (a section's own check, such as two of
    its options that do not go together), else the config file (or the defaults)."""
    bad = [".".join(str(p) for p in e["loc"]) for e in err.errors()]

    def related(key: str, b: str) -> bool:
        return not b or b == key or b.startswith(key + ".") or key.startswith(b + ".")

    hits = [o for o in overrides if any(related(".".join(parse_override(o)[0]), b) for b in bad)]
    return ", ".join(flags.get(o, f"--set {o}") for o in hits) if hits else source
