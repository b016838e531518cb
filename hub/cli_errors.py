"""What every `hub` command does with an error: one clear message on stderr and a non-zero exit."""

from __future__ import annotations

from functools import wraps

import typer

from hub.errors import ContractViolation, HubError

__all__ = ["fail", "handles_errors"]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handles_errors(func):
    """Print hub errors as one clear message (or one line per problem) and exit non-zero."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ContractViolation as exc:
            typer.echo(f"error: {len(exc.problems)} problem(s); nothing was written:", err=True)
            for problem in exc.problems:
                typer.echo(f"  {problem}", err=True)
            raise typer.Exit(2) from None
        except HubError as exc:
            fail(exc.describe())

    return wrapper
