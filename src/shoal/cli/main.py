"""The ``shoal`` command: a thin edge over the public API.

Every command runs inside :func:`main`, which turns a :class:`~shoal.exceptions.ShoalError`
into a one-line message on stderr and the exit code from
:data:`~shoal.exceptions.CLI_EXIT_CODES` (see docs/cli.md), never a traceback. A command may
also end with an exit code that is not an error (``click.exceptions.Exit``): a run paused for
approval exits with :data:`~shoal.cli.run.APPROVAL_EXIT_CODE`.
"""

from __future__ import annotations

import sys

import click

from shoal import __version__
from shoal.cli.approve import approve
from shoal.cli.audit import audit
from shoal.cli.evals import eval_group
from shoal.cli.models import doctor, models
from shoal.cli.run import chat, run
from shoal.cli.serve import serve
from shoal.cli.trace import trace
from shoal.exceptions import ShoalError, exit_code_for
from shoal.observability import configure_from_env

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shoal")
def cli() -> None:
    """Agents with tools on small language models, on this machine."""
    # audit log, tracing and metrics as the environment says (docs/observability.md)
    configure_from_env()


cli.add_command(run)
cli.add_command(chat)
cli.add_command(models)
cli.add_command(doctor)
cli.add_command(eval_group)
cli.add_command(serve)
cli.add_command(approve)
cli.add_command(trace)
cli.add_command(audit)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shoal`` console script."""
    try:
        code = cli.main(args=argv, prog_name="shoal", standalone_mode=False)
    except ShoalError as exc:
        click.echo(f"error: {exc}", err=True)
        return exit_code_for(exc)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
