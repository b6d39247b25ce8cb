"""Mount lifecycle: check, mount, daemonize, serve, unmount on a signal.

The filesystem is mounted (pyfuse3.init) before the process detaches, so
every error a user can make is reported by the command itself; only then
does it fork into the background, where trio serves requests. The command
waits until the daemon has taken over the vault's read lock (it names the
daemon's pid from then on) and exits with the daemon's verdict.

A live mount (`refresh` seconds > 0) follows the vault (live.py) and holds no
lock: prune and forget run while it is up, and what they remove disappears from
it. A static mount (`refresh` 0) holds the vault's read lock instead, which a
thread of the serving process refreshes; when it is lost (taken over, or not
refreshable for half the stale time) the mount unmounts itself with a log line.
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
from coldvault.errors import ColdvaultError, ExitCode, UserError
from coldvault.mount.chunkcache import ChunkSource, DiskCache
from coldvault.mount import fuse_ops
from coldvault.mount.fuse_ops import FuseOps
from coldvault.mount.live import Refresher
from coldvault.mount.restore_manager import RestoreManager
from coldvault.mount.vfs import VirtualFS
from coldvault.vault import thaw
from coldvault.vault.lock import LockLostError, VaultLock
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)


def build_fs(vault: Vault, *, cold_mode: str = "fail", tier: str = "Bulk", days: int = 7,
             cache_dir: str | None = None, cache_size: int = 1 << 30) -> VirtualFS:
    cache_dir = cache_dir or os.path.join(thaw.cache_dir(vault), "chunks")
    disk = DiskCache(cache_dir, cache_size) if cache_size > 0 else None
    if vault.store.capabilities().local_reads:
        # A hot pack is read as cheaply as a cached copy would be: only cold ones are worth a copy.
        chunks = ChunkSource(vault, disk, cache_pack=lambda name: vault.store.head(name).cold)
    else:
        chunks = ChunkSource(vault, disk)
    restores = RestoreManager(vault, mode=cold_mode, tier=tier, days=days)
    return VirtualFS(vault, chunks, restores)


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


def _wait_for_daemon(ready: int, mountpoint: str, log_file: str) -> None:
    """In the command: exit with what the daemon reports on `ready` ("<code>\\n<message>")."""
    data = b""
    while chunk := os.read(ready, 4096):
        data += chunk
    code_text, _, message = data.decode(errors="replace").partition("\n")
    if code_text == "0":
        print(f"mounted at {mountpoint}; log in {log_file}; unmount with: fusermount3 -u {mountpoint}")
        sys.stdout.flush()
        os._exit(0)
    if not code_text.isdigit():
        code_text, message = str(ExitCode.ERROR), f"the mount process ended before it was ready; see {log_file}"
    print(f"coldvault: error: {message}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(int(code_text))


def _daemonize(log_file: str, mountpoint: str) -> int:
    """Fork into the background. Returns, in the daemon, the pipe on which the waiting
    command expects "0" (ready) or "<exit code>\\n<error>"."""
    ready_r, ready_w = os.pipe()
    if os.fork():
        os.close(ready_w)
        _wait_for_daemon(ready_r, mountpoint, log_file)  # does not return
    os.close(ready_r)
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
    return ready_w


def _report(ready: int, code: int, message: str = "") -> None:
    os.write(ready, f"{code}\n{message}".encode())
    os.close(ready)


def _unmount_for(error: LockLostError) -> None:
    log.error("%s: unmounting", error.message)
    pyfuse3.terminate()


async def _serve(fs: VirtualFS, lock: VaultLock | None = None, refresh: float = 0) -> None:
    async with trio.open_nursery() as nursery:
        fs.nursery = nursery
        if refresh > 0:
            nursery.start_soon(Refresher(fs, refresh, fuse_ops.invalidate).run)
        if lock is not None:
            token = trio.lowlevel.current_trio_token()

            def lost(error: LockLostError) -> None:  # in the refresh thread
                try:
                    trio.from_thread.run_sync(_unmount_for, error, trio_token=token)
                except trio.RunFinishedError:
                    pass  # unmounting anyway

            lock.start_refresh(on_lost=lost)

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
          log_file: str | None = None, fsname: str = "coldvault", lock: VaultLock | None = None,
          refresh: float = 0) -> None:
    """Mount and serve until unmounted. `lock` (acquired, not yet refreshed) is refreshed while
    serving; if it is lost the mount ends, and `lock.lost` says why. `refresh` > 0: the mount
    follows the vault, looking for new and forgotten snapshots every `refresh` seconds."""
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
            sys.stdout.flush()
            ready = _daemonize(log_file, mountpoint)
            try:
                if lock is not None:
                    lock.moved_to_this_process()  # the lock names the daemon, not the command
            except ColdvaultError as exc:
                _report(ready, exc.exit_code, exc.message)
                raise
            except BaseException:
                _report(ready, ExitCode.ERROR, f"the mount failed; see {log_file}")
                raise
            _report(ready, ExitCode.OK)
        trio.run(_serve, fs, lock, refresh)
    finally:
        pyfuse3.close(unmount=True)
