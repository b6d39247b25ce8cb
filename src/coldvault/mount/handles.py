"""Open files of the mount: handles, reads chunk by chunk, readahead, the cold policy.

A read maps its byte range to the file's chunks (offsets from the index, so no
chunk is fetched to know a size), asks the chunk source for each, and — when the
reads are sequential — starts fetching the chunks after them. A chunk in a cold
tier goes to the restore manager (wait, or give up with ColdFailError).
"""

from __future__ import annotations

import bisect
import logging
from typing import Callable

import trio

from coldvault.errors import ColdDataError, ColdvaultError
from coldvault.mount.chunkcache import ChunkSource
from coldvault.mount.errors import BadHandleError, DamagedFileError
from coldvault.mount.nodes import FileNode, Node
from coldvault.mount.restore_manager import RestoreManager

log = logging.getLogger(__name__)


class Handle:
    __slots__ = ("node", "offsets", "size", "pid", "last_end", "ra_next")

    def __init__(self, node: FileNode, offsets: list[int], size: int, pid: int | None):
        self.node = node
        self.offsets = offsets
        self.size = size
        self.pid = pid
        self.last_end = 0
        self.ra_next = 0


class OpenFiles:
    """The handles of open files and the reads through them.

    `raw_length(chunk)` is the chunk's size from the index (None: not indexed);
    `damaged(node, message)` logs the file once and gives the error to raise."""

    def __init__(self, chunks: ChunkSource, cold: RestoreManager, raw_length: Callable,
                 damaged: Callable[[Node, str], DamagedFileError], readahead: int):
        self.chunks = chunks
        self.cold = cold
        self.raw_length = raw_length
        self.damaged = damaged
        self.readahead = readahead
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self.nursery: trio.Nursery | None = None  # for readahead; none: no readahead

    def open(self, node: FileNode, chunks: list, pid: int | None) -> int:
        offsets, pos = [], 0
        for c in chunks:
            offsets.append(pos)
            size = self.raw_length(c)
            if size is None:
                raise self.damaged(node, f"chunk {c.hex()[:16]} is not in any index of the vault")
            pos += size
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(node, offsets, pos, pid)
        return fh

    def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        h = self.handles.get(fh)
        if h is None:
            raise BadHandleError(fh)
        end = min(off + size, h.size)
        if off >= end:
            return b""
        i = bisect.bisect_right(h.offsets, off) - 1
        parts = []
        pos = off
        while pos < end:
            data = await self._chunk(h, i)
            start = h.offsets[i]
            # Views, not copies: a reply of one piece goes to the kernel as it is, pieces
            # of several chunks are copied once, by the join.
            parts.append(memoryview(data)[pos - start:min(end, start + len(data)) - start])
            pos = start + len(data)
            i += 1
        if off == h.last_end:
            self._read_ahead(h, i)
        else:
            h.ra_next = i  # a seek: readahead starts again once reads are sequential
        h.last_end = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _chunk(self, h: Handle, i: int) -> bytes:
        """Chunk `i` of the file; a cold one waits for the restore manager, which raises
        ColdFailError (give up now) or InterruptedWaitError (the reader was interrupted)."""
        bid = h.node.chunks[i]
        while True:
            try:
                return await self.chunks.get(bid)
            except ColdDataError:
                await self.cold.make_readable(h.node.chunks, h.node.path, h.pid)
            except ColdvaultError as exc:
                raise self.damaged(h.node, exc.message) from None

    def _read_ahead(self, h: Handle, next_index: int) -> None:
        if self.nursery is None:
            return
        chunks = h.node.chunks
        start = max(h.ra_next, next_index)
        limit_pos = (h.offsets[next_index] if next_index < len(chunks) else h.size) + self.readahead
        j = start
        while j < len(chunks) and h.offsets[j] < limit_pos:
            if self.chunks.cached(chunks[j]) is None:
                self.nursery.start_soon(self._prefetch, chunks[j])
            j += 1
        h.ra_next = j

    async def _prefetch(self, bid) -> None:
        try:
            await self.chunks.get(bid)
        except Exception as exc:  # the real read reports it
            log.debug("readahead of chunk %s failed: %s", bid.hex()[:16], exc)
