"""Errors that reach the user, each with its documented exit code.

A user mistake or a problem with the vault raises a subclass of `ColdvaultError`;
the CLI prints its message as one line (plus the hint, if any) and exits with
`exit_code`. Anything else is a bug and keeps its traceback in the log.
"""

from __future__ import annotations


class ExitCode:
    OK = 0
    ERROR = 1  # failed: zfs, a hook, a restore writer (one line); or a bug (traceback)
    USAGE = 2  # bad command line
    PARTIAL = 3  # finished, but some source files could not be read
    COMMAND_FAILED = 4  # `backup stdin --command`: the command failed, no snapshot was saved
    NO_VAULT = 10  # no vault at that URL / config missing
    BAD_PASSWORD = 11
    UNSUPPORTED = 12  # vault or object of a newer format version / unknown feature
    DAMAGED = 13  # missing, truncated or corrupt object
    COLD = 14  # data is in a cold tier and must be restored first
    UNREACHABLE = 15  # store unreachable, or still failing after retries
    LOCKED = 16  # another coldvault process holds the lock
    PERMISSION = 17  # the store refused access
    NO_SPACE = 18  # the store's disk (or quota) is full
    TARGET = 19  # a restore or dump could not write its target (full, read-only, no permission)


class ColdvaultError(Exception):
    """Base of all errors meant for people: one line, a hint, an exit code."""

    exit_code = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserError(ColdvaultError):
    """The command line or the input asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


class NoVaultError(ColdvaultError):
    exit_code = ExitCode.NO_VAULT


class BadPasswordError(ColdvaultError):
    exit_code = ExitCode.BAD_PASSWORD


class UnsupportedFormatError(ColdvaultError):
    exit_code = ExitCode.UNSUPPORTED


class DamagedError(ColdvaultError):
    """An object is missing, truncated or fails authentication. Names the object.

    `reason`: what is wrong without the object's name, for a report that names the
    object itself (check); the whole message when the two are not apart.
    """

    exit_code = ExitCode.DAMAGED

    def __init__(self, message: str, hint: str | None = None, reason: str | None = None):
        super().__init__(message, hint)
        self.reason = reason or message


class ColdDataError(ColdvaultError):
    """Data is in a cold tier; `objects` says which ones must be restored first."""

    exit_code = ExitCode.COLD

    def __init__(self, message: str, objects: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.objects = objects or []


class LockedError(ColdvaultError):
    exit_code = ExitCode.LOCKED


class TargetWriteError(ColdvaultError):
    """Writing where the user asked the data to go failed (a full disk or quota, a read-only
    file system, no permission, ...). Names the path and the system's reason."""

    exit_code = ExitCode.TARGET

    def __init__(self, path: str, reason: str, hint: str | None = None):
        super().__init__(f"cannot write {path}: {reason}", hint)
        self.path = path
        self.reason = reason

    @classmethod
    def of(cls, path: str, exc: OSError, hint: str | None = None) -> TargetWriteError:
        return cls(path, exc.strerror or str(exc), hint)
