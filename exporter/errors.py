"""The exporter's exception tree; each class carries the process exit code the CLI returns.

* ExporterError                              exit 1 (never raised bare)
  x ConfigError(ExporterError, ValueError)   exit 2  .key, e.g. "source.per_page"
    + FilterError                            exit 2  a metadata filter the API would reject
    + FleetConfigError                       exit 2  .problems: bad accounts-file entries
  x AuthError                                exit 3  401/403: credentials or permission
  x FetchError                               exit 4  .url (never with a secret in it)
    + ResponseError                          exit 4  .status, .code: a non-retryable API reply
    + RetriesExhausted                       exit 4  .attempts; __cause__ is the last failure
    + PageFormatError                        exit 4  a body that is not a List V2 page
    + CursorError                            exit 4  a cursor that repeats itself
  x SinkError                                exit 5  .sink: writing or publishing output failed
  x SchemaContractError                      exit 6  schema_contract = "freeze" was violated
  x IntegrityError                           exit 7  `inspect` found a mismatch
  x ConcurrentRunError                       exit 8  the same export is already running
  x ChangesWithheldError                     exit 9  snapshot published, its changes withheld
                                                     (removed share above the guard)
  x FleetFailedError                         exit 10 `fleet`: an account's code was not 0
  x Interrupted                              exit 130 SIGINT/SIGTERM; the checkpoint is kept

`cli.py` catches ExporterError only and prints `str(error)` as one line (`lines()`: one
line per problem, for errors that list several); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # built by the run, carried here for the CLI to print
    from exporter.run.summary import RunSummary


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's text (its type's name when it has none): a
    library's multi-line message (DuckDB's hints, an SDK's dump) becomes one CLI line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ExporterError(Exception):
    """Root of every error the exporter reports to its user."""

    exit_code = 1

    def lines(self) -> list[str]:
        """Return what the CLI prints: one line, whitespace folded."""
        return [" ".join(str(self).split())]


class ConfigError(ExporterError, ValueError):
    """A bad option, flag, environment variable or config key; `key` names it."""

    exit_code = 2

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class FilterError(ConfigError):
    """A metadata filter that breaks the List V2 rules (syntax, operator, limits)."""

    def __init__(self, message: str, key: str = "filter") -> None:
        super().__init__(key, message)
        self.reason = message


class FleetConfigError(ConfigError):
    """An accounts file with bad entries; every problem is reported, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("accounts", "; ".join(problems))

    def lines(self) -> list[str]:
        return [" ".join(f"accounts file: {problem}".split()) for problem in self.problems]


class AuthError(ExporterError):
    """The API refused the credentials or their permissions (401/403)."""

    exit_code = 3


class FetchError(ExporterError):
    """The API could not be read; `url` is the request URL, secrets never included."""

    exit_code = 4

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(message)


class ResponseError(FetchError):
    """A non-retryable API reply (400/404, or a filter the API rejects)."""

    def __init__(self, url: str, status: int, code: int | None, message: str) -> None:
        self.status = status
        self.code = code
        self.api_message = message
        # The message quotes the API's errors ("code 7003: ..."); say the code once.
        quoted = code is None or message.startswith(f"code {code}")
        code_text = "" if quoted else f" code {code}"
        super().__init__(url, f"API replied {status}{code_text}: {message}")


class RetriesExhausted(FetchError):
    """Every attempt failed; `__cause__` holds the last failure."""

    def __init__(self, url: str, attempts: int, last: str) -> None:
        self.attempts = attempts
        super().__init__(url, f"gave up after {attempts} attempts: {last}")


class PageFormatError(FetchError):
    """A 200 reply whose body is not a List V2 page (no images, a bad token)."""


class CursorError(FetchError):
    """A cursor repeated its previous token or page: the walk would never end."""


class SinkError(ExporterError):
    """Writing, committing or publishing output failed; `sink` names the sink or store."""

    exit_code = 5

    def __init__(self, sink: str, message: str) -> None:
        self.sink = sink
        super().__init__(f"{sink}: {message}")


class SchemaContractError(ExporterError):
    """schema_contract = "freeze" and the data needs a new column or a wider type."""

    exit_code = 6


class IntegrityError(ExporterError):
    """A published snapshot does not match its manifest (rows, bytes or sha256)."""

    exit_code = 7


class ConcurrentRunError(ExporterError):
    """Another export of the same request and date holds the run lock."""

    exit_code = 8


class ChangesWithheldError(ExporterError):
    """The snapshot is published but too many images vanished for its changes to be trusted.

    A walk that silently missed part of the catalog would otherwise publish mass removals
    into every warehouse that applies the change set.
    """

    exit_code = 9
    summary: RunSummary | None = None  # the published snapshot's, for the CLI to print

    def __init__(
        self,
        snapshot_date: str,
        removed: int,
        previous_images: int,
        previous_date: str,
        share: float,
        limit: float,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        self.snapshot_date = snapshot_date
        self.removed = removed
        self.counts = dict(counts or {"removed": removed})  # what the withheld set holds
        super().__init__(
            f"snapshot {snapshot_date} is published but its changes are withheld: "
            f"{removed} of {previous_images} images ({share:.1%}) were removed since "
            f"{previous_date}, above changes.max_removed_share {limit}; if the removals are "
            "real, re-run with --accept-removals (with --resume the walk is skipped)"
        )


class FleetFailedError(ExporterError):
    """At least one account of a fleet did not publish or withheld its change set (exit 9;
    its snapshot is published): each account's code is in the table."""

    exit_code = 10

    def __init__(self, failed: int, total: int, withheld: int = 0) -> None:
        self.failed = failed
        self.withheld = withheld
        if failed:
            text = (
                f"{failed} of {total} accounts did not publish (each account's exit code is "
                "listed above); re-run with --resume to finish only those"
            )
            if withheld:
                text += f"; {withheld} withheld their change set (exit 9)"
        else:
            text = (
                f"{total} of {total} accounts published; {withheld} withheld their change set "
                "(exit 9): check the catalog; if the removals are real, re-run with --resume "
                "--accept-removals"
            )
        super().__init__(text)


class Interrupted(ExporterError):
    """The run was stopped by SIGINT/SIGTERM; the checkpoint is kept for --resume."""

    exit_code = 130


class UnfinishedRun(ExporterError):
    """`inspect`: a snapshot's files are intact but a run stopped before loading its tables.

    Not a mismatch (7): `--resume` finishes it. It carries the code of the stopped run it
    reports (130, interrupted: checkpoint kept, `--resume` continues).
    """

    exit_code = Interrupted.exit_code
