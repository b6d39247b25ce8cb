"""What the virtual tree raises when a request cannot be answered.

VirtualFS raises these (and lets the restore manager's ColdFailError and
InterruptedWaitError through); fuse_ops.ERRNO maps each to the errno the kernel
gets, in one table.
"""

from __future__ import annotations


class FsError(Exception):
    """A request the tree cannot answer; the subclass says why."""


class NoEntryError(FsError):
    """No such name in the directory, or no such inode."""


class NotADirError(FsError):
    pass


class IsADirError(FsError):
    pass


class WrongTypeError(FsError):
    """The request does not apply to this kind of node (readlink of a file, open of a fifo)."""


class BadHandleError(FsError):
    pass


class NoAttributeError(FsError):
    pass


class DamagedFileError(FsError):
    """A tree node, chunk list or chunk the request needs is missing or corrupt; the
    file (or directory) was named in one log line when this was first seen."""
