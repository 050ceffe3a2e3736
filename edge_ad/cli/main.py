"""Entry point: builds the typer app from the command modules and turns UserError into one line."""

from __future__ import annotations

import sys

import typer

from edge_ad import __version__
from edge_ad.cli import bench_cmd, config_cmd, data_cmd, eval_cmd, export_cmd, run_cmd, train_cmd
from edge_ad.errors import UserError

app = typer.Typer(
    name="edge-ad",
    help="Find anomalies in live video from a fixed camera, trained on normal footage only.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edge-ad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """edge-ad: train on normal footage, export a bundle, run it on cameras."""


for module in (data_cmd, config_cmd, train_cmd, eval_cmd, export_cmd, run_cmd, bench_cmd):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="edge-ad")
    except UserError as e:
        print(f"edge-ad: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("edge-ad: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
