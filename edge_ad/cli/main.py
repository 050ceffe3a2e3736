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


# What a command interrupted by Ctrl-C leaves, where it is worth knowing (the others leave nothing half done:
# their outputs are written whole or not at all).
_AFTER_INTERRUPT = {"train": "the same command with --resume continues from the last finished epoch"}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="edge-ad")
    except UserError as e:
        print(f"edge-ad: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted(args)
    except SystemExit as e:
        if e.code == 130 and _caused_by_interrupt(e):
            _interrupted(args)
        raise


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Typer turns Ctrl-C into a silent exit 130; the KeyboardInterrupt is still in the exception's chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _interrupted(args: list[str]) -> None:
    command = next((a for a in args if not a.startswith("-")), "")
    hint = _AFTER_INTERRUPT.get(command)
    print(f"edge-ad: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    main()
