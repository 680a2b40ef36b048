"""Entry point of the ``biorules`` command: the group, its shared flags and error handling."""

from __future__ import annotations

import sys

import click

from biorules import __version__
from cli.context import EXIT_FAILED, EXIT_USAGE, Context
from cli.lazy import LazyGroup

COMMANDS = {
    "lyapunov": "cli.lyapunov:lyapunov",
    "train": "cli.train:train",
    "floss": "cli.floss:floss",
    "export": "cli.export:export",
    "sweep": "cli.sweep:sweep",
    "report": "cli.report:report",
    "segment": "cli.segment:segment",
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="biorules")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool, as_json: bool) -> None:
    """biorules: plausible learning rules, Lyapunov spectra, flossing, RWKV-UNet segmentation."""
    ctx.obj = Context(debug=debug, quiet=quiet, json=as_json)


def _interrupted(e: BaseException) -> bool:
    """Whether ``e`` was caused by a KeyboardInterrupt somewhere down its chain."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input is one line and exit 2, a failed run one line and exit 1."""
    from biorules.errors import InputError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="biorules", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Interrupted; finished results are kept, rerun the same command to resume.", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line naming the option, no usage banner
        click.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; finished results are kept, rerun the same command to resume.", err=True)
        sys.exit(130)
    except InputError as e:
        if debug:
            raise
        click.echo(f"Error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as e:  # a failed run: one line, the traceback only with --debug
        if _interrupted(e):  # Ctrl-C inside a compiled kernel arrives wrapped in a SystemError
            click.echo("Interrupted; finished results are kept, rerun the same command to resume.", err=True)
            sys.exit(130)
        if debug:
            raise
        click.echo(f"Error: {type(e).__name__}: {e}", err=True)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
