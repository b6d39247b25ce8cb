"""Mount lifecycle: check, mount, daemonize, serve, unmount on a signal.

The filesystem is mounted (pyfuse3.init) before the process detaches, so
every error a user can make is reported by the command itself; only then
does it fork into the background, where trio serves requests.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys

import pyfuse3
import trio

from coldvault import privatefiles, runtime
from coldvault.errors import UserError
from coldvault.mount.chunkcache import ChunkSource, DiskCache
from coldvault.mount.fuse_ops import FuseOps
from coldvault.mount.restore_manager import RestoreManager
from coldvault.mount.vfs import VirtualFS
from coldvault.store.local import LocalStore
from coldvault.vault import thaw
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)


def build_fs(vault: Vault, *, cold_mode: str = "fail", tier: str = "Bulk", days: int = 7,
             cache_dir: str | None = None, cache_size: int = 1 << 30) -> VirtualFS:
    cache_dir = cache_dir or os.path.join(thaw.cache_dir(vault), "chunks")
    disk = DiskCache(cache_dir, cache_size) if cache_size > 0 else None
    if isinstance(getattr(vault.store, "inner", vault.store), LocalStore):
        # A hot local pack is already on a local disk: only cold ones are worth a copy.
        chunks = ChunkSource(vault, disk, cache_pack=lambda name: vault.store.head(name).cold)
    else:
        chunks = ChunkSource(vault, disk)
    cold = RestoreManager(vault, mode=cold_mode, tier=tier, days=days)
    return VirtualFS(vault, chunks, cold)


READ_AHEAD_KB = 1024
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def raise_readahead(mountpoint: str) -> None:
    """Ask the kernel for 1 MiB reads instead of FUSE's default 128 KiB: a chunk is about
    1 MiB, and every request costs a round trip through pyfuse3. Needs root; best effort.

    Called when the first file is opened (FuseOps): earlier, the kernel's processing of
    our FUSE_INIT answer would set it back to 128 KiB; later, files already open would
    keep their 128 KiB (a file's readahead is set up when it is opened). The device
    number comes from /proc/self/mountinfo: a stat() of the mount point would be a
    FUSE request to ourselves.
    """
    dev = None
    want = os.fsencode(mountpoint)
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split()
                # Paths are raw bytes there, with space, tab, newline and backslash as \ooo.
                if _OCTAL_ESCAPE.sub(lambda m: bytes((int(m[1], 8),)), fields[4]) == want:
                    dev = fields[2].decode()  # the last mount on that path wins: ours
    except OSError:
        return
    if dev is None:
        return
    path = f"/sys/class/bdi/{dev}/read_ahead_kb"
    try:
        with open(path, "r+") as f:
            if int(f.read()) < READ_AHEAD_KB:
                f.seek(0)
                f.write(str(READ_AHEAD_KB))
    except (OSError, ValueError) as exc:
        log.debug("could not raise readahead (%s): %s", path, exc)


def _daemonize(log_file: str) -> None:
    if os.fork():
        os._exit(0)  # the mount is up; the command returns
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = privatefiles.create(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s coldvault[%(process)d]: %(message)s"))
    logging.getLogger().handlers[:] = [handler]


async def _serve(fs: VirtualFS) -> None:
    async with trio.open_nursery() as nursery:
        fs.nursery = nursery

        async def on_signal():
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                async for sig in signals:
                    log.info("%s: unmounting", signal.Signals(sig).name)
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def mount(fs: VirtualFS, mountpoint: str, *, foreground: bool, allow_other: bool = False,
          log_file: str | None = None, fsname: str = "coldvault") -> None:
    mountpoint = os.path.abspath(mountpoint)
    if not os.path.isdir(mountpoint):
        raise UserError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise UserError(f"{mountpoint} is already a mount point", hint=f"unmount it first: fusermount3 -u {mountpoint}")
    if not os.path.exists("/dev/fuse"):
        raise UserError("/dev/fuse does not exist: FUSE is not available on this machine")
    options = set(pyfuse3.default_options) | {"ro", "default_permissions", f"fsname={fsname}", "subtype=coldvault"}
    if allow_other:
        options.add("allow_other")
    runtime.fewer_gc_walks()
    ops = FuseOps(fs, before_first_open=lambda: raise_readahead(mountpoint))
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as exc:
        raise UserError(f"cannot mount at {mountpoint}: {exc}") from None
    try:
        if not foreground:
            log_file = log_file or os.path.join(thaw.cache_dir(fs.vault), "mount.log")
            privatefiles.makedirs(os.path.dirname(log_file))
            print(f"mounted at {mountpoint}; log in {log_file}; unmount with: fusermount3 -u {mountpoint}")
            sys.stdout.flush()
            _daemonize(log_file)
        trio.run(_serve, fs)
    finally:
        pyfuse3.close(unmount=True)
