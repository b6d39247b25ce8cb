"""Files and directories only their owner can read, whatever the umask; and the
temporary names they are written under.

A vault's config holds the salt and the wrapped master keys, and the caches hold
the names of packs and restore requests: none of it is for other local users.
The local store, the restore log, the mount's chunk cache and its log create
everything through these calls. Existing directories are left as they are
(the user may have made the vault's directory on purpose).

A file is written under ``.tmp-<pid>-<thread>-<name>`` and renamed into place, so
two processes sharing a directory (two mounts, a backup and a thaw) never write
to one temporary file, and whoever cleans up can tell a write in flight from the
leftover of a killed writer (`abandoned`).
"""

from __future__ import annotations

import os
import threading

DIR_MODE = 0o700
FILE_MODE = 0o600


def makedirs(path: str) -> None:
    """Create `path` and any missing parent, each 0700."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        makedirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if os.path.isdir(path):
            return  # made by someone else meanwhile
        raise
    os.chmod(path, DIR_MODE)  # the umask may have taken away bits the owner needs


def create(path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """Open (creating it 0600) the file `path`; returns the descriptor."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


TMP_PREFIX = ".tmp-"
ABANDONED_AGE = 3600.0  # a temporary file this old is abandoned, whoever wrote it


def temp_name(name: str) -> str:
    """The temporary name this thread of this process writes `name` under."""
    return f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{name}"


def abandoned(tmp_name: str, mtime: float, now: float) -> bool:
    """Whether the temporary file `tmp_name` (last written at `mtime`) is a leftover:
    its writer (the pid in its name, on this host) has ended, or it is an hour old.
    Callers clean up while this process writes nothing there, so its own pid counts
    as ended too."""
    if now - mtime > ABANDONED_AGE:
        return True
    pid = tmp_name[len(TMP_PREFIX):].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:
        return False  # alive, another user's
    return False
