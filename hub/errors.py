"""The hub's exceptions, named by what the caller must do.

    HubError
     ├── TransientError          retry later (the agency or network may recover)
     │    └── LeaseLost           another worker took over: stop quietly, it will finish
     ├── FatalError              stop this job and alert an operator
     ├── SkippableError          quarantine this record or batch and go on
     │    ├── ContractViolation  a record breaks the canonical contract (lists every problem)
     │    └── RefusedInput       hostile or corrupt input: refused whole, nothing written
     └── ConfigurationError      fix the configuration; retrying will not help

Third-party errors (requests, zeep, lxml, OS, SFTP) are translated into these once,
in adapters/, with ``raise ... from exc``. Every exception pickles, because they cross
Celery's result backend and process boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigurationError",
    "ContractViolation",
    "FatalError",
    "HubError",
    "LeaseLost",
    "Problem",
    "RefusedInput",
    "SkippableError",
    "TransientError",
]


class HubError(Exception):
    """Base of every error the hub raises on purpose."""

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        for key, value in context.items():
            setattr(self, key, value)

    def __reduce__(self):  # keep extra attributes across pickling
        return (self.__class__, (self.message,), self.__dict__)

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        """The message and the kind of error, as commands and job summaries print it."""
        return f"{self} ({type(self).__name__})"


class TransientError(HubError):
    """Retry later: the peer is slow, overloaded or briefly unreachable.

    ``retry_after`` (seconds) is set when the peer said how long to wait.
    """

    retry_after: float | None = None


class LeaseLost(TransientError):
    """Another worker holds this agency's lease now; stop without writing more."""


class FatalError(HubError):
    """Stop the job and alert: the peer refused us in a way retrying cannot fix."""


class SkippableError(HubError):
    """Quarantine the offending record (or batch) with this reason and continue."""

    raw: str | None = None


class ConfigurationError(HubError):
    """Fix the configuration (agency data file, settings, certificates) and try again."""


@dataclass(frozen=True)
class Problem:
    """One reason a record was refused: which record, which field, why."""

    record: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"record {self.record}: {self.field}: {self.reason}"


class ContractViolation(SkippableError):
    """The record does not satisfy the canonical contract; ``problems`` lists every issue."""

    problems: tuple[Problem, ...] = ()

    @classmethod
    def of(cls, problems: list[Problem] | tuple[Problem, ...]) -> "ContractViolation":
        text = "; ".join(str(p) for p in problems)
        return cls(text, problems=tuple(problems))


class RefusedInput(SkippableError):
    """Hostile or corrupt input (DTD, traversal, bad signature, replay): refused whole."""
