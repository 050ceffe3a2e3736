"""``edge-ad config show``."""

from __future__ import annotations

from pathlib import Path

import typer

OVERRIDE_HELP = "Override a config value, e.g. --set training.epochs=5 (repeatable)."


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect configs.", no_args_is_help=True)

    @group.command("show")
    def show(
        config: Path = typer.Argument(None, help="YAML config; the defaults when omitted."),
        set_: list[str] = typer.Option([], "--set", help=OVERRIDE_HELP),
    ) -> None:
        """Print the resolved config (file + overrides + defaults) as YAML."""
        from edge_ad.config import load_config

        typer.echo(load_config(config, set_).to_yaml(), nl=False)

    app.add_typer(group, name="config")
