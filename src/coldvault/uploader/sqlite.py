"""Consistent copies of SQLite databases, through SQLite's online backup API.

A database copied byte by byte while it is written can be torn. With
`backup dir --sqlite-consistent`, a file that starts with the SQLite header
is copied by `sqlite3.Connection.backup` into a private temporary file (a
consistent image of the last commit, WAL included) and that copy is stored
under the database's name and metadata; its `-wal`, `-shm` and `-journal`
companions are left out, their committed content being in the copy.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import urllib.parse

MAGIC = b"SQLite format 3\0"
COMPANIONS = (b"-wal", b"-shm", b"-journal")


def is_database(fd: int) -> bool:
    return os.pread(fd, len(MAGIC), 0) == MAGIC


def is_companion(name: bytes, names) -> bool:
    return any(name.endswith(suffix) and name[: -len(suffix)] in names for suffix in COMPANIONS)


def chunk_copy(path: bytes, chunker) -> tuple[list, int]:
    """Back the database up into a temporary file and chunk that; returns (ids, size)."""
    fd, tmp = tempfile.mkstemp(prefix="coldvault-sqlite-")
    os.close(fd)
    try:
        uri = "file:" + urllib.parse.quote(os.fsdecode(path)) + "?mode=ro"
        src = sqlite3.connect(uri, uri=True)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb", buffering=0) as f:
            return chunker.chunk_stream(f)
    except sqlite3.Error as exc:
        raise OSError(f"SQLite backup failed: {exc}") from None
    finally:
        os.unlink(tmp)
