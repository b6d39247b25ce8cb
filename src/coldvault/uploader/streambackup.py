"""Back up a byte stream (stdin, or a command's output) as a snapshot holding one file.

For `coldvault backup stdin --name seafile-db.sql --command -- mysqldump seafile-db`
(or `mysqldump ... | coldvault backup stdin --name seafile-db.sql`): the stream is
chunked as it arrives (never held whole) and stored as a one-file tree, so it is
listed, restored and mounted like any other file.

With a command, coldvault runs it itself (no shell) and reads its standard output;
its standard error passes through to ours. A command that exits non-zero or is
killed leaves no snapshot record, only packs that the next run reuses or `prune`
removes (the write order of docs/format.md), and `CommandFailedError`.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess

import trio

from coldvault import __version__
from coldvault.errors import ColdvaultError, ExitCode, UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.session import BackupSession
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)


class CommandFailedError(ColdvaultError):
    """The command whose output was being backed up failed: no snapshot was saved."""

    exit_code = ExitCode.COMMAND_FAILED


def exit_status(returncode: int) -> str:
    """`exited with status 3`, `was killed by SIGKILL`: what `Popen.returncode` means."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def start_command(argv: list[str]) -> subprocess.Popen:
    """Start `argv` (no shell) with its stdout on a pipe; stdin and stderr are ours.

    A command that cannot be started is the user's mistake (`UserError`)."""
    program = shlex.quote(argv[0])
    try:
        return subprocess.Popen(argv, stdout=subprocess.PIPE)
    except FileNotFoundError:
        raise UserError(f"cannot run {program}: command not found") from None
    except PermissionError:
        raise UserError(f"cannot run {program}: permission denied (is it an executable file?)") from None
    except OSError as exc:
        raise UserError(f"cannot run {program}: {exc.strerror}") from None


def _stop(proc: subprocess.Popen) -> None:
    """The backup failed while the command still runs: ask it to stop, then make it."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


class StreamBackup:
    def __init__(self, vault: Vault, stream, name: str, source: str, when_ns: int, parent: SnapshotRecord | None,
                 *, command: list[str] | None = None, tags=(), host: str | None = None):
        """Back up `stream` (a binary file object), or with `command` (an argv) that command's stdout;
        `tags` and `host` (default: this machine's name) go into the record."""
        problem = tree.name_problem(os.fsencode(name))
        if problem:
            raise UserError(f"--name {name!r} is not a valid file name ({problem})")
        if command is not None and not command:
            raise UserError("--command needs the command to run after --")
        self.vault = vault
        self.stream = stream
        self.command = command
        self.name = name
        self.source = source
        self.when_ns = when_ns
        self.parent = parent
        self.tags = sorted(set(tags))
        self.host = host
        self.session = BackupSession(vault)

    def _chunk_command(self) -> tuple[list, int]:
        """In a worker thread: run the command through the chunker; fails unless it exits 0."""
        program = shlex.quote(self.command[0])
        log.info("running %s for %s", program, self.source)  # not its arguments: they may hold a password
        proc = start_command(self.command)
        done = False
        try:
            with proc.stdout:
                ids, total = self.session.chunker.chunk_stream(proc.stdout)
            done = True
        finally:
            if not done and proc.poll() is None:
                _stop(proc)
            code = proc.wait()
        if code != 0:
            raise CommandFailedError(
                f"{program} {exit_status(code)} after {total} bytes of output; no snapshot of {self.source} was saved")
        return ids, total

    async def run(self) -> SnapshotRecord:
        async def body():
            if self.command is not None:
                ids, total = await trio.to_thread.run_sync(self._chunk_command)
            else:
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
            hostname=self.host or socket.gethostname(),
            paths=[self.name],
            tree=root,
            parent=self.parent.id if self.parent else None,
            summary={"files": 1, "bytes_total": total, **self.session.summary()},
            tags=list(self.tags),
            program=f"coldvault {__version__}",
        )
        await self.session.commit(rec)
        return rec
