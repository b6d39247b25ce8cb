"""Back up a byte stream (stdin) as a snapshot holding one file.

For `mysqldump ... | coldvault backup stdin --name seafile-db.sql`: the stream
is chunked as it arrives (never held whole) and stored as a one-file tree, so
it is listed, restored and mounted like any other file.
"""

from __future__ import annotations

import os
import socket

import trio

from coldvault import __version__
from coldvault.errors import UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.session import BackupSession
from coldvault.vault.vault import Vault


class StreamBackup:
    def __init__(self, vault: Vault, stream, name: str, source: str, when_ns: int, parent: SnapshotRecord | None):
        problem = tree.name_problem(os.fsencode(name))
        if problem:
            raise UserError(f"--name {name!r} is not a valid file name ({problem})")
        self.vault = vault
        self.stream = stream
        self.name = name
        self.source = source
        self.when_ns = when_ns
        self.parent = parent
        self.session = BackupSession(vault)

    async def run(self) -> SnapshotRecord:
        async def body():
            ids, total = await trio.to_thread.run_sync(self.session.chunker.chunk_stream, self.stream)
            entry = tree.Entry(
                name=os.fsencode(self.name),
                type=tree.FILE,
                mode=0o600,
                uid=os.getuid(),
                gid=os.getgid(),
                mtime=self.when_ns,
                ctime=self.when_ns,
                size=total,
                chunks=ids,
            )
            return await self.session.save_tree([entry]), total

        root, total = await self.session.run(body)
        rec = SnapshotRecord(
            kind="stream",
            source=self.source,
            time=self.when_ns,
            hostname=socket.gethostname(),
            paths=[self.name],
            tree=root,
            parent=self.parent.id if self.parent else None,
            summary={"files": 1, "bytes_total": total, **self.session.summary()},
            program=f"coldvault {__version__}",
        )
        await self.session.commit(rec)
        return rec
