"""Files and directories only their owner can read, whatever the umask.

A vault's config holds the salt and the wrapped master keys, and the caches hold
the names of packs and restore requests: none of it is for other local users.
The local store, the restore log, the mount's chunk cache and its log create
everything through these two calls. Existing directories are left as they are
(the user may have made the vault's directory on purpose).
"""

from __future__ import annotations

import os

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
