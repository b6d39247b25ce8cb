"""Mounting for tests: `coldvault mount --foreground` as a real subprocess, unmounted in finally."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from cvtools import COLDVAULT


class Mount:
    def __init__(self, path: str, proc: subprocess.Popen, log_path: str):
        self.path = path
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def __truediv__(self, rel: str) -> str:
        return os.path.join(self.path, rel)


def unmount(path: str) -> None:
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)


@contextlib.contextmanager
def mounted(env: dict, mountpoint, *args: str, timeout: float = 30):
    mountpoint = str(mountpoint)
    os.makedirs(mountpoint, exist_ok=True)
    log_path = mountpoint.rstrip("/") + ".log"
    full_env = {**os.environ, **env}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*COLDVAULT, "-v", "mount", mountpoint, "--foreground", *args],
                                env=full_env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    m = Mount(mountpoint, proc, log_path)
    try:
        deadline = time.monotonic() + timeout
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None:
                raise AssertionError(f"mount exited with {proc.returncode}:\n{m.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not mounted after {timeout} s:\n{m.log()}")
            time.sleep(0.05)
        yield m
    finally:
        unmount(mountpoint)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
