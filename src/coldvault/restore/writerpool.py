"""The restoring process's side of the writer processes (`writer`): start, feed, stop.

`writer_pool` starts writers as they are needed, up to one per core: a message
goes to an idle writer, or to a new one while there are fewer than `most`, or
else to the writer with the fewest bytes outstanding. Each writer answers its
messages in order; one task per writer reads the answers and wakes whoever waits
for each. A writer that exits early fails the messages it held. Leaving the
pool, whether the restore is done, failed or was interrupted, closes every
writer's stdin (its signal to finish the message in hand and exit), waits for
it, and kills it only if it does not go within STOP_TIMEOUT.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import marshal
import os
import subprocess
import sys
from typing import Awaitable, Callable

import trio

import coldvault
from coldvault import faults
from coldvault.errors import ColdvaultError
from coldvault.restore import writer as wire

log = logging.getLogger(__name__)

PIPE_BYTES = 1024 * 1024  # the pipe to a writer holds a read of 1 MiB, not 64 KiB
STOP_TIMEOUT = 30.0  # seconds a writer gets to finish after its stdin is closed


class WriterDied(ColdvaultError):
    """A writer process went away (killed, or out of memory) before it answered."""

    def __init__(self, code: int | None):
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited (code {code})"
        super().__init__(f"a restore writer process {how} before the restore was done",
                         hint="the files restored so far are complete; run the restore again with --overwrite")


class _Waiting:
    __slots__ = ("event", "answer")

    def __init__(self):
        self.event = trio.Event()
        self.answer = None


class _Writer:
    def __init__(self, proc: trio.Process):
        self.proc = proc
        self.sending = trio.Lock()
        self.waiting: collections.deque[_Waiting] = collections.deque()
        self.outstanding = 0  # bytes sent and not answered
        self.dead = False


class WriterPool:
    def __init__(self, nursery: trio.Nursery, setup: dict, root_fd: int, most: int):
        self._nursery = nursery
        self._setup = setup
        self._root_fd = root_fd
        self.most = max(1, most)
        self._writers: list[_Writer] = []
        self._starting = trio.Lock()
        self._env = dict(os.environ)
        # The writer must run this very coldvault, whatever the interpreter's own path says.
        here = os.path.dirname(os.path.dirname(os.path.abspath(coldvault.__file__)))
        self._env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)

    async def send(self, header, data) -> Callable[[], Awaitable[tuple]]:
        """Send one message (see `writer`); returns what to await for its answer. The caller
        may drop `data` once this returns: the writer has it."""
        w = await self._pick()
        waiting = _Waiting()
        size = len(data)
        w.outstanding += size
        try:
            async with w.sending:
                if w.dead:
                    raise WriterDied(await w.proc.wait())
                w.waiting.append(waiting)
                await w.proc.stdin.send_all(wire.frame(header, size))
                if size:
                    await w.proc.stdin.send_all(data)
            faults.crash_point("restore-sent")
        except trio.BrokenResourceError:
            w.outstanding -= size
            raise WriterDied(await w.proc.wait()) from None
        except BaseException:
            w.outstanding -= size
            raise

        async def answer() -> tuple:
            try:
                await waiting.event.wait()
            finally:
                w.outstanding -= size
            if isinstance(waiting.answer, WriterDied):
                raise waiting.answer
            return waiting.answer
        return answer

    async def _pick(self) -> _Writer:
        w = self._choose()
        if w is not None:
            return w
        async with self._starting:  # one start at a time: a start waits, and others must see it
            return self._choose() or await self._start()

    def _choose(self) -> _Writer | None:
        """An idle writer, else the least busy one when no more may start; None: start one."""
        alive = [w for w in self._writers if not w.dead]
        idle = next((w for w in alive if not w.outstanding), None)
        if idle is not None:
            return idle
        if len(alive) < self.most:
            return None
        return min(alive, key=lambda w: w.outstanding)

    async def _start(self) -> _Writer:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "coldvault.restore.writer", str(self._root_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(self._root_fd,), env=self._env)
        with contextlib.suppress(OSError):  # a smaller pipe only costs more wakeups
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        w = _Writer(proc)
        self._writers.append(w)
        async with w.sending:
            await proc.stdin.send_all(wire.frame(self._setup))
        self._nursery.start_soon(self._answers, w)
        return w

    async def _answers(self, w: _Writer) -> None:
        """Read `w`'s answers, in order, until it closes its stdout."""
        buf = bytearray()
        stream = w.proc.stdout
        while True:
            while len(buf) < wire.PREFIX.size or len(buf) < wire.PREFIX.size + wire.PREFIX.unpack_from(buf)[0]:
                chunk = await stream.receive_some(1024 * 1024)
                if not chunk:
                    await self._died(w)
                    return
                buf += chunk
            head_len, _ = wire.PREFIX.unpack_from(buf)
            end = wire.PREFIX.size + head_len
            answer = marshal.loads(buf[wire.PREFIX.size:end])
            del buf[:end]
            waiting = w.waiting.popleft()
            waiting.answer = answer
            waiting.event.set()

    async def _died(self, w: _Writer) -> None:
        w.dead = True
        code = await w.proc.wait()
        while w.waiting:
            waiting = w.waiting.popleft()
            waiting.answer = WriterDied(code)
            waiting.event.set()

    async def close(self) -> None:
        """Close each writer's stdin and wait: it finishes the message it is writing (so no
        file is left half-written, even when the restore failed), then exits."""
        for w in self._writers:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await w.proc.stdin.aclose()
        for w in self._writers:
            with trio.move_on_after(STOP_TIMEOUT) as scope:
                await w.proc.wait()
            if scope.cancelled_caught:
                log.warning("a restore writer process did not stop; killing it")
                w.proc.kill()
                await w.proc.wait()


@contextlib.asynccontextmanager
async def writer_pool(setup: dict, root_fd: int, most: int):
    """A `WriterPool` for the body of this block; the writers are gone after it."""
    async with trio.open_nursery() as nursery:
        pool = WriterPool(nursery, setup, root_fd, most)
        try:
            yield pool
        finally:
            with trio.CancelScope(shield=True):
                await pool.close()
