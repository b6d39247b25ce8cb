"""Receive a snapshot from the vault into a ZFS dataset: the shortest chain, step by step.

Before anything is received, each step's chunk list must add up (by the sizes
in the index) to the length its record gives. Each step's stream is then
rebuilt from its chunks (each checked against its id as it is read) and fed to
`zfs receive -F`, all but its last `TAIL` bytes: `zfs receive` commits a
snapshot when it reads the stream's END record, before end of file, so the
tail that holds that record is written only once the length and XXH3-128 of
the whole stream match the record. On a mismatch the receive is killed and its
input closed without the tail: nothing of that stream is committed. The first
failure stops the restore with the target at its last good snapshot.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

import xxhash

from coldvault.errors import ColdDataError, DamagedError, UserError
from coldvault.index.ids import BlobId
from coldvault.vault import thaw
from coldvault.vault.streams import find_stream, read_chunks, stream_chunks
from coldvault.vault.vault import Vault
from coldvault.zfs import commands
from coldvault.zfs.chain import Stream, shortest_chain, streams_by_dataset
from coldvault.zfs.commands import ZfsError

log = logging.getLogger(__name__)

# Bytes of each stream held back until the whole stream is verified: the END record that
# makes `zfs receive` commit is the last 312 bytes of a send stream (more with a trailing
# record of `zfs send -R`, never near this).
TAIL = 64 * 1024


def check_length(vault: Vault, s: Stream, chunks: list[bytes]) -> None:
    """The chunk list adds up to the stream's recorded length (sizes from the index, no reads)."""
    what = f"a chunk of {s.dataset}@{s.snapshot}"
    total = sum(vault.locate(BlobId(c), what).raw_length for c in chunks)
    if total != s.length:
        raise DamagedError(f"the chunk list of {s.dataset}@{s.snapshot} ({s.file_name}) adds up to {total} bytes, "
                           f"its record says {s.length}", hint="run 'coldvault check'")


def iter_stream(vault: Vault, chunks: list[bytes], lookahead: int = 8):
    """The stream's bytes in order, read a few chunks ahead on worker threads."""
    with ThreadPoolExecutor(vault.store.capabilities().connections) as pool:
        yield from read_chunks(vault, chunks, pool, lookahead)


def recursive_pairs(vault: Vault, dataset: str, snap: str, target: str) -> list[tuple[str, str]]:
    """(dataset, where to receive it) for `dataset` and every dataset below it with a stream
    of @snap in the vault, parents first: `dataset/x` goes to `target/x`."""
    commands.check_dataset(target)
    out = []
    for ds, streams in streams_by_dataset(vault.snapshots()).items():
        if (ds == dataset or ds.startswith(dataset + "/")) and any(s.snapshot == snap for s in streams):
            out.append((ds, target + ds[len(dataset):]))
    if not any(ds == dataset for ds, _ in out):
        raise UserError(f"there is no {dataset}@{snap} in the vault",
                        hint=f"list them with 'coldvault snapshots --source zfs:{dataset}'")
    return sorted(out, key=lambda p: (p[0].count("/"), p[0]))


class ZfsRestore:
    def __init__(self, vault: Vault, dataset: str, snap: str, target: str, *, thaw_: bool = False,
                 wait: bool = False, tier: str = "Bulk", days: int = 7, out=print):
        self.vault = vault
        self.dataset = commands.check_dataset(dataset)
        self.snap = commands.check_snapname(snap)
        self.target = commands.check_dataset(target)
        self.thaw = thaw_
        self.wait = wait
        self.first_poll = thaw.first_poll() if wait else None  # a bad setting is refused before any request
        self.tier = tier
        self.days = days
        self.out = out
        self.target_existed = False
        self.start: str | None = None

    def plan(self) -> list[Stream]:
        streams = streams_by_dataset(self.vault.snapshots()).get(self.dataset, [])
        want = find_stream(streams, self.snap, self.dataset)
        self.target_existed = commands.exists(self.target)
        if self.target_existed:
            local = commands.snapshots(self.target)
            if want.guid in {s.guid for s in local}:
                return []
            # An increment is received on top of the target's newest snapshot, nothing older.
            newest = local[-1] if local else None
            chain = shortest_chain(streams, want.guid, newest.guid) if newest else None
            if chain is None:
                at = f"at @{newest.name}, which no chain to @{self.snap} starts from" if newest else "without snapshots"
                raise UserError(
                    f"{self.target} exists {at}",
                    hint=f"receive into a new dataset, or destroy {self.target} first",
                )
            self.start = newest.name
            self.out(f"{self.target} is at @{newest.name}: continuing from there")
            return chain
        chain = shortest_chain(streams, want.guid, None)
        if chain is None:
            raise DamagedError(f"no chain of streams in the vault leads to {self.dataset}@{self.snap}",
                               hint="a stream it needs was removed")
        return chain

    def _check_cold(self, chain: list[Stream], chunk_lists: list[list[bytes]]) -> None:
        packs = set()
        for chunks in chunk_lists:
            packs |= thaw.packs_for_chunks(self.vault, chunks)
        state = thaw.cold_state(self.vault, packs)
        if not state.unreadable:
            return
        size = state.bytes_of(state.unreadable) / 2**20
        if not self.thaw:
            raise ColdDataError(
                f"{len(state.unreadable)} pack(s), {size:.1f} MiB, needed for this chain are in a cold tier"
                + (f" ({len(state.restoring)} being restored)" if state.restoring else ""),
                state.unreadable,
                hint="add --thaw to request their restore (and --wait to wait for it)",
            )
        asked = thaw.request(self.vault, state, self.tier, self.days)
        self.out(f"requested the restore of {len(asked)} pack(s) ({size:.1f} MiB) at tier {self.tier} for the "
                 f"{len(chain)} stream(s) of the chain: " + ", ".join(s.file_name for s in chain)
                 + (f"; {len(state.restoring)} were already being restored" if state.restoring else ""))
        if not self.wait:
            raise ColdDataError(
                f"the restore of {len(state.unreadable)} pack(s) was requested; they are not readable yet",
                state.unreadable, hint="run this again when they are ready, or add --wait",
            )
        self.out("waiting for the restores to finish")
        thaw.wait_readable(self.vault, state.unreadable, self.first_poll)

    def _receive(self, s: Stream, chunks: list[bytes]) -> None:
        proc = commands.receive(self.target)
        h = xxhash.xxh3_128()
        n = 0
        held = b""  # the last TAIL bytes seen: not written until the whole stream is verified
        try:
            for data in iter_stream(self.vault, chunks):
                h.update(data)
                n += len(data)
                buf = held + data
                cut = len(buf) - TAIL
                if cut > 0:
                    proc.stdin.write(memoryview(buf)[:cut])
                    held = buf[cut:]
                else:
                    held = buf
            if n != s.length or h.digest() != s.z["xxh3"]:
                raise DamagedError(f"the rebuilt stream {s.file_name} does not match its record "
                                   f"({n} of {s.length} bytes, or a different checksum); nothing of it was committed")
            proc.stdin.write(held)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # zfs receive gave up: its exit status and message say why
        except BaseException:
            # Without the tail the stream has no END record: whatever was read is thrown away.
            proc.kill()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.wait()
            raise
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            said = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
            raise ZfsError(f"zfs receive of {s.file_name} into {self.target} failed: {said}")

    def run(self) -> list[Stream]:
        chain = self.plan()
        if not chain:
            self.out(f"{self.target} already has @{self.snap}")
            return []
        chunk_lists = [stream_chunks(self.vault, s) for s in chain]
        for s, chunks in zip(chain, chunk_lists):
            try:
                check_length(self.vault, s, chunks)
            except DamagedError as exc:
                exc.message += f"; nothing was received into {self.target}"
                raise
        total = sum(s.length for s in chain)
        self.out(f"restoring {self.dataset}@{self.snap} into {self.target}: {len(chain)} stream(s), "
                 f"{total / 2**20:.1f} MiB: " + ", ".join(s.file_name for s in chain))
        self._check_cold(chain, chunk_lists)
        done = self.start
        for i, (s, chunks) in enumerate(zip(chain, chunk_lists), 1):
            try:
                self._receive(s, chunks)
            except (ZfsError, DamagedError, ColdDataError) as exc:
                where = f"{self.target} is at @{done}" if done else f"{self.target} was not created"
                exc.message = f"step {i} of {len(chain)} ({s.file_name}) failed: {exc.message}; {where}"
                exc.hint = "run the same command again to continue from there"
                raise
            done = s.snapshot
            self.out(f"received {s.file_name} ({i}/{len(chain)})")
        return chain
