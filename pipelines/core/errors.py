"""The one error family every stage raises for conditions that a retry cannot fix.

A :class:`PermanentError` says the run cannot succeed as it stands: bad data above the threshold, no
served system, an input that is not published, a corrupt artifact, bad parameters. The job runner, the
Airflow runtime and the command line recognise it in one place each: Airflow fails the task without
retries, the command line prints one line (and the hint of a :class:`UserError`) and exits 2. Any other
exception is a bug or a transient fault and keeps its traceback.
"""

from __future__ import annotations


class PermanentError(RuntimeError):
    """A failure that a retry cannot fix; the message says what is wrong and what to do next."""


class UserError(PermanentError):
    """A mistake of the person running Nightfeed (a bad file, flag or setting, a missing input).

    Args:
        message: what is wrong, naming the file, flag or setting.
        hint: what to do about it, shown on a line of its own by the command line.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
