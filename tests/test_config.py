"""Config: YAML + overrides validated, errors that name the key."""

import re
from pathlib import Path

import pytest

from edge_ad.cli.main import main
from edge_ad.config import load_config
from edge_ad.errors import UserError

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.data.in_channels == 1 + len(cfg.data.temporal_offsets)


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(None, ["training.epochs=3", "data.temporal_offsets=[4, 1]", "scoring.weights={nll: 2}"])
    assert cfg.training.epochs == 3
    assert cfg.data.temporal_offsets == [1, 4]
    assert cfg.scoring.weights == {"nll": 2.0}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("training.epoch=3", "unknown key 'training.epoch'"),
        ("training.epochs=zero", "'training.epochs'"),
        ("data.size=[100, 128]", "'data.size'"),
        ("scoring.weights={bogus: 1}", "unknown map"),
        ("model.downsamplings=4", "'model.downsamplings'"),
        ("noequals", "expected section.key=value"),
    ],
)
def test_bad_values_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_a_bad_value_is_blamed_on_where_it_came_from(tmp_path: Path) -> None:
    """An override's error names the override, not the file it overrode; the file's own error names the file."""
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  epochs: 2\n")
    with pytest.raises(UserError, match=r"^--set training\.bogus=1: unknown key"):
        load_config(config, ["training.bogus=1"])
    with pytest.raises(UserError, match=r"^--set training=\{epochs: x\}: 'training\.epochs'"):
        load_config(config, ["training={epochs: x}"])  # the section above the bad key
    # a section's own check (two options that do not go together) names both overrides that set them
    with pytest.raises(UserError, match=r"^--set scoring\.frame_score=max, --set scoring\.extra_topk_fractions="):
        load_config(config, ["scoring.frame_score=max", "scoring.extra_topk_fractions=[0.1]", "training.epochs=3"])
    config.write_text("training:\n  epochs: x\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(config))}: 'training\.epochs'"):
        load_config(config, ["data.size=[128, 128]"])


def test_bad_yaml_file_gives_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  size: [128, 128\nmodel: {}\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_config(p)


def test_a_section_given_twice_is_refused(tmp_path: Path) -> None:
    """YAML itself keeps the second and drops the first: epochs 3 became the default 10 without a word."""
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  epochs: 3\nmodel:\n  width: 32\ntraining:\n  lr: 0.01\n")
    with pytest.raises(UserError, match=r"'training' appears twice in one mapping \(line 5\)"):
        load_config(p)
    p.write_text("training:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(UserError, match="'epochs' appears twice"):
        load_config(p)


def test_config_show_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["config", "show", str(CONFIGS[0]), "--set", "training.epochs=7"])
    assert e.value.code in (0, None)
    assert "epochs: 7" in capsys.readouterr().out


def test_cli_user_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["config", "show", "/nonexistent.yaml"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-ad: error: config file not found") and "\n" not in err
