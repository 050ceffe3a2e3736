"""The shape of a calibration record: what ``edge-ad calibrate`` writes to ``calibration.json``, what eval and
export read back, and what a bundle's manifest carries to the runtime. No torch here: the runtime checks a
bundle's copy with it at load time, so a hand edit fails there, in one line, not at the first alert."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError

from edge_ad.errors import UserError


class BundleCalibration(BaseModel):
    """What the runtime and eval of a bundle read; the record holds more (statistics' summaries, footage
    read), kept as is."""

    model_config = ConfigDict(extra="allow")

    threshold: FiniteFloat
    pixel_threshold: FiniteFloat
    map_scale: Annotated[FiniteFloat, Field(gt=0.0)]
    val_clips: list[str] = []
    normal_footage: list[dict[str, Any]] = []


class CalibrationRecord(BundleCalibration):
    """What a run's scoring reads too, to rebuild the scorer it calibrated."""

    maps: list[str]
    restore_threshold: FiniteFloat
    topk_areas: list[Annotated[float, Field(gt=0.0, le=1.0)]] | None = None
    scoring: dict[str, Any] | None = None


def checked_calibration(
    data: Any, where: str, remedy: str, shape: type[BundleCalibration] = CalibrationRecord
) -> dict[str, Any]:
    """``data`` with its fields checked and their numbers as numbers, or one UserError naming the first bad
    field (``where`` names the file, ``remedy`` says how to make it again)."""
    try:
        record = shape.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where} is damaged ({first_error(e)}); {remedy}") from None
    return {**data, **record.model_dump(exclude_unset=True)}


def first_error(e: ValidationError) -> str:
    """pydantic's first complaint as one short phrase: where, then what."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] in ("dict_type", "model_type"):
        what = "not a JSON object"
    else:
        what = err["msg"].removeprefix("Value error, ")
    return f"{where}: {what}" if where else what
