"""Entry point of the ``biorules`` command: the group, its shared flags and error handling."""

from __future__ import annotations

import sys

import click

from biorules import __version__
from biorules.runtime import keep_freed_memory
from cli.context import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, INTERRUPTED, Context, examples
from cli.lazy import LazyGroup

COMMANDS = {
    "lyapunov": "cli.lyapunov:lyapunov",
    "train": "cli.train:train",
    "floss": "cli.floss:floss",
    "export": "cli.export:export",
    "sweep": "cli.sweep:sweep",
    "report": "cli.report:report",
    "segment": "cli.segment:segment",
    "verify": "cli.verify:verify",
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=examples("biorules lyapunov --gain 0.5:2.0 --n 200     # spectra over initial gains",
                             "biorules --json sweep --out results/sweep.zarr  # the gain study, resumable"))
@click.version_option(__version__, prog_name="biorules")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary (strict JSON).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool, as_json: bool) -> None:
    """biorules: plausible learning rules, Lyapunov spectra, flossing, RWKV-UNet segmentation.

    Exit codes: 0 ok, 1 the run failed, 2 bad usage or input (nothing written), 3 finished with
    diverged or failed cells (the summary counts them), 130 interrupted (rerun to resume).
    The methods are described in docs/ (docs/index.md), the commands in docs/cli.md.
    """
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


def _leave(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: bad input is one line and exit 2, a failed run one line and exit 1, no traceback
    or exception class name unless ``--debug``."""
    from biorules.errors import InputError, RunError, one_line

    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args[: args.index("--")] if "--" in args else "--debug" in args
    if not debug:  # a diverging run's arithmetic is reported by its status, not by numpy's warnings
        import warnings

        warnings.filterwarnings("ignore", message="(invalid value|overflow|divide by zero) encountered",
                                category=RuntimeWarning)
    keep_freed_memory()  # a run reuses its freed memory at every update instead of faulting it in anew
    try:
        code = cli.main(args=argv, prog_name="biorules", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:  # ctx.exit(code) returns here
            sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo(INTERRUPTED, err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as e:  # one line naming the option, no usage banner
        _leave(one_line(e.format_message(), limit=1000), EXIT_USAGE)
    except click.ClickException as e:
        _leave(one_line(e.format_message(), limit=1000), e.exit_code)
    except KeyboardInterrupt:
        click.echo(INTERRUPTED, err=True)
        sys.exit(EXIT_INTERRUPTED)
    except InputError as e:
        if debug:
            raise
        _leave(one_line(e, limit=1000), EXIT_USAGE)
    except RunError as e:
        if debug:
            raise
        _leave(one_line(e, limit=1000), EXIT_FAILED)
    except Exception as e:  # a failed run: one line, the traceback only with --debug
        if _interrupted(e):  # Ctrl-C inside a compiled kernel arrives wrapped in a SystemError
            click.echo(INTERRUPTED, err=True)
            sys.exit(EXIT_INTERRUPTED)
        if debug:
            raise
        _leave(f"{one_line(e, limit=1000)} (--debug shows where)", EXIT_FAILED)


if __name__ == "__main__":
    main()
