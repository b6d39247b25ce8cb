"""What the benchmark scripts share: one copy of each measuring and reporting helper.

Waiting for a quiet machine (`settle`) and warming memory (`prefault`) before a
timed step; running a child and taking its wall time, peak RSS and CPU time
with os.wait4 (`timed`); CPU and memory of a running process from /proc; the
least disturbed of a few attempts (`least_disturbed`); FUSE filesystem
processes (`FuseMount`); py-spy raw profiles; and the facts every report
starts with (host, CPU, versions). Not a test helper: benchmarks measure,
tests assert (STYLE.md item 12).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
PASSWORD = "bench-password"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MOUNT_TIMEOUT = 120.0


class ChildFailedError(Exception):
    pass


def run_main(main, prog: str) -> None:
    """Exit with `main()`'s status; a failed child ends the script with one line and status 1."""
    try:
        sys.exit(main())
    except ChildFailedError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(1)


# ---- a quiet machine -------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU time spent by the whole machine so far (all CPUs, not idle or iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def settle(max_wait: float) -> float:
    """Sync, then wait (at most `max_wait` s) for a second in which the machine is nearly idle
    (< 0.1 CPU-s used machine-wide); returns the wait.

    Other work on the machine (tests of other sessions) cannot be stopped, only waited out.
    """
    t0 = time.monotonic()
    os.sync()
    if max_wait <= 0:
        return 0.0
    while True:
        b0 = busy_cpu_seconds()
        time.sleep(1.0)
        if busy_cpu_seconds() - b0 < 0.1 or time.monotonic() - t0 >= max_wait:
            return time.monotonic() - t0


def prefault(nbytes: int) -> None:
    """Touch `nbytes` of fresh memory and free it again, right before a timed step.

    On this VM, memory the guest has not touched for a while can cost several times more kernel
    time on first touch than memory freed a moment ago (writing 1 GiB to /dev/shm once took 2.6 s,
    then 0.35 s each time). A backup, a FUSE read or a zfs send fills about 1 GiB of page cache and
    heap, so without this step a run can end up measuring how cold the VM's free memory happens to
    be (one backup in three had twice the system time). In a child process: a forked child starts
    with its parent's peak RSS (the kernel copies the high-water mark with the address space, and
    keeps it across exec in the rusage), so a large allocation here would show in every tool's peak
    RSS."""
    if nbytes > 0:
        subprocess.run([sys.executable, "-c", f"bytearray({nbytes})"], check=True)


def before_timed_step(max_wait: float, prefault_mib: int) -> float:
    """Wait for a quiet machine (`settle`), then make fresh memory cheap to take (`prefault`);
    returns the wait."""
    waited = settle(max_wait)
    prefault(prefault_mib * MiB)
    return waited


def least_disturbed(fn, retries: int, max_other: float, describe):
    """Run `fn` (one timed step); while other work used more than `max_other` CPU-s per second of
    it, run it again (at most `retries` times) and return the least disturbed attempt.
    `describe(result)` gives (what, other CPU s, seconds).

    Only the other CPU decides, never the timing, so the retries do not favour either tool.
    """
    best, best_load = None, 0.0
    for k in range(retries + 1):
        got = fn()
        what, other, seconds = describe(got)
        load = other / max(seconds, 1.0)
        if best is None or load < best_load:
            best, best_load = got, load
        if load <= max_other:
            break
        if k < retries:
            print(f"     ({what}: other work used {other:.1f} CPU-s, {load:.2f} per second; repeating)", flush=True)
    return best


# ---- children and processes ------------------------------------------------------------------------


def timed(cmd: list[str], env: dict, log_path: str) -> tuple[float, int, float, float, str]:
    """Run `cmd`; returns (wall seconds, peak RSS KiB, user+sys CPU seconds, other CPU seconds, stdout).

    "Other" is the CPU time everything else on the machine used meanwhile. stdout and
    stderr go to files, not pipes, so reading them costs the child nothing.
    """
    with open(log_path + ".out", "wb") as out, open(log_path + ".err", "wb") as err:
        busy0 = busy_cpu_seconds()
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler = TreeRss(p.pid)
        _, status, ru = os.wait4(p.pid, 0)
        seconds = time.monotonic() - t0
        tree_kib = sampler.stop()
        busy = busy_cpu_seconds() - busy0
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(log_path + ".out", "rb") as f:
        stdout = f.read().decode(errors="replace")
    if p.returncode != 0:
        with open(log_path + ".err", "rb") as f:
            stderr = f.read().decode(errors="replace")
        raise ChildFailedError(f"{' '.join(cmd)} exited with {p.returncode}:\n{stderr[-3000:]}")
    cpu = ru.ru_utime + ru.ru_stime
    return seconds, max(ru.ru_maxrss, tree_kib), cpu, max(0.0, busy - cpu), stdout


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


class TreeRss:
    """The peak of the summed memory of a process and its descendants, sampled every `period`
    seconds. `ru_maxrss` alone is the largest single process: a command that runs helper
    processes (coldvault's restore writers) uses their sum. Each process counts its PSS (pages
    shared with the others, such as the Python binary, count in shares, not once per process);
    a child between fork and exec (whose pages are its parent's, and whose ru_maxrss therefore
    says so too) is not counted. `timed` reports the larger of this and ru_maxrss."""

    def __init__(self, pid: int, period: float = 0.1):
        self.pid, self.period, self.peak = pid, period, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.period):
            parents = {}
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        with open(f"/proc/{name}/stat", "rb") as f:
                            parents[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
                    except (OSError, IndexError, ValueError):
                        pass
            tree, grew = {self.pid}, True
            while grew:
                more = {c for c, pp in parents.items() if pp in tree} - tree
                tree |= more
                grew = bool(more)
            total = 0
            for pid in tree:
                try:
                    if pid != self.pid and _cmdline(pid) == _cmdline(parents[pid]):
                        continue  # forked, not yet exec'ed: its pages are its parent's
                    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                        total += next(int(line.split()[1]) for line in f if line.startswith(b"Pss:"))
                except (OSError, IndexError, ValueError, KeyError, StopIteration):
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def untimed(cmd: list[str], env: dict) -> str:
    r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise ChildFailedError(f"{' '.join(cmd)} exited with {r.returncode}:\n{r.stderr[-3000:]}")
    return r.stdout


def source_tree_coldvault() -> tuple[list[str], dict]:
    """(command line, environment) that run coldvault from this checkout's `src/`, whatever is installed:
    `python -m coldvault` with `src/` first on PYTHONPATH."""
    env = clean_env()
    src = os.path.join(REPO_ROOT, "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return [sys.executable, "-m", "coldvault"], env


def drop_caches() -> bool:
    """`sync; echo 3 > /proc/sys/vm/drop_caches`: the next step reads its source from the disk, as the
    first backup of a day does. False if not permitted (not root, or a container)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COLDVAULT_"))}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def proc_cpu(pid: int) -> float:
    """user+sys CPU seconds of process `pid` so far (all its threads); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of process `pid`, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def self_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---- files -----------------------------------------------------------------------------------------


def read_all(path: str) -> int:
    """Read the file `path`, or every file under the directory `path`, once; the bytes read.
    Untimed: so that it is in the page cache."""
    n = 0
    buf = bytearray(4 * MiB)
    paths = [path] if os.path.isfile(path) else \
        [os.path.join(d, f) for d, _, files in os.walk(path) for f in files]
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                n += k
    return n


def du(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


# ---- FUSE filesystems ------------------------------------------------------------------------------


def in_proc_mounts(path: str) -> bool:
    """Whether `path` is a mount point, without asking the filesystem (a stat could hang on it)."""
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class FuseMount:
    """A filesystem process started by a benchmark, serving `mountpoint` until `close()`.

    `is_mounted(mountpoint)` tells when it serves: `in_proc_mounts` by default; os.path.ismount
    also waits for the filesystem's first answer. `seconds` is how long mounting took.
    """

    live: list["FuseMount"] = []  # closed in a script's finally, whatever happens

    def __init__(self, name: str, cmd: list[str], env: dict, mountpoint: str, log_path: str,
                 is_mounted=in_proc_mounts):
        self.name = name
        self.mountpoint = mountpoint
        self.log_path = log_path
        self.is_mounted = is_mounted
        if is_mounted(mountpoint):
            raise ChildFailedError(f"{mountpoint} is already a mount point; unmount it: fusermount3 -u {mountpoint}")
        os.makedirs(mountpoint, exist_ok=True)
        self._out = open(log_path + ".out", "wb")
        self._err = open(log_path + ".err", "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)
        FuseMount.live.append(self)
        try:
            self.seconds = self._wait_mounted()
        except BaseException:
            self.close()
            raise

    def _wait_mounted(self) -> float:
        deadline = self.t_start + MOUNT_TIMEOUT
        while not self.is_mounted(self.mountpoint):
            if self.proc.poll() is not None:
                raise ChildFailedError(f"{self.name} exited with {self.proc.returncode} before mounting:\n"
                                       f"{self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                raise ChildFailedError(f"{self.name} did not mount within {MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.005)
        return time.monotonic() - self.t_start

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        with open(self.log_path + ".err", "rb") as f:
            return f.read().decode(errors="replace")

    def stat(self, path: str, timeout: float = MOUNT_TIMEOUT) -> os.stat_result:
        """os.stat in a helper thread: a filesystem that never answers fails the run instead of hanging it."""
        out: dict = {}

        def go():
            try:
                out["st"] = os.stat(path)
            except OSError as exc:
                out["err"] = exc

        t = threading.Thread(target=go, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self.proc.kill()  # the stat returns (ENOTCONN) once the filesystem process is gone
            raise ChildFailedError(f"stat {path} got no answer from {self.name} in {timeout:.0f} s")
        if "err" in out:
            raise ChildFailedError(f"stat {path}: {out['err']}")
        return out["st"]

    def close(self) -> None:
        """Unmount and wait for the process; SIGTERM (then SIGKILL) it if unmounting does not end it."""
        if self.proc.poll() is None:
            unmounted = self.is_mounted(self.mountpoint) and \
                subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True).returncode == 0
            try:
                self.proc.wait(timeout=30 if unmounted else 0.5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)  # each of these filesystems unmounts itself on SIGTERM
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.is_mounted(self.mountpoint):  # the process died and left the mount behind
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)
        self._out.close()
        self._err.close()
        if self in FuseMount.live:
            FuseMount.live.remove(self)

    @classmethod
    def close_all(cls) -> None:
        for m in list(cls.live):
            m.close()


# ---- py-spy ----------------------------------------------------------------------------------------


def start_py_spy(py_spy: str, pid: int, out: str, rate: int) -> subprocess.Popen:
    """`py-spy record` of process `pid` into `out` (raw format, every thread), until `stop_py_spy`."""
    err = open(out + ".err", "wb")
    p = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--threads", "--format", "raw",
                          "--output", out], stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    time.sleep(1.0)  # py-spy attaches
    return p


def stop_py_spy(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)


def py_spy_samples(path: str) -> list[tuple[list[str], int]] | None:
    """The samples of a raw py-spy profile: (stack, from the thread's entry down to the top frame, count);
    None if there is no profile."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = []
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


# ---- what a report says ----------------------------------------------------------------------------


def mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds if seconds > 0 else float("inf")


def truncated(x: float) -> str:
    """Two decimals, cut rather than rounded, so a ratio just under the target never reads as reaching it."""
    return f"{int(x * 100) / 100:.2f}"


def command_line() -> str:
    return f"{' '.join([sys.executable] + sys.argv)} (in {os.getcwd()})"


def host_line() -> str:
    return f"{platform.node()}, {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def restic_facts(restic: str, work: str) -> tuple[str, str]:
    """(version line, repository version and compression of a fresh default repository)."""
    version = untimed([restic, "version"], clean_env()).strip()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        env = clean_env() | {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": os.path.join(tmp, "cache")}
        untimed([restic, "--repo", os.path.join(tmp, "r"), "init"], env)
        cfg = json.loads(untimed([restic, "--repo", os.path.join(tmp, "r"), "cat", "config"], env))
    rv = cfg.get("version")
    if rv is not None and rv >= 2:
        comp = f"repository format v{rv}, compression on (default mode 'auto', zstd)"
    else:
        comp = f"repository format v{rv}, no compression"
    return version, comp


def coldvault_facts(coldvault: str | list[str], env: dict | None = None) -> str:
    """Version and commit of `coldvault` (a command, or a command line such as `source_tree_coldvault()`'s)."""
    cmd = [coldvault] if isinstance(coldvault, str) else list(coldvault)
    version = untimed(cmd + ["--version"], env or clean_env()).strip()
    try:
        commit = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", REPO_ROOT, "diff", "--name-only", "HEAD", "--", "src"],
                                 capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return f"{version}, commit unknown"
    return f"{version}, commit {commit}" + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def disk_line(path: str) -> str:
    """File system type, size and free space of the one holding `path` (`df -hT`)."""
    try:
        out = subprocess.run(["df", "-hT", path], capture_output=True, text=True, check=True).stdout.splitlines()
        dev, fstype, size, _, avail, *_ = out[-1].split()
        return f"{fstype} on {dev}, {size}, {avail} free"
    except (OSError, subprocess.CalledProcessError, ValueError):
        return "unknown"


def meminfo() -> str:
    try:
        return subprocess.run(["free", "-h"], capture_output=True, text=True, check=True).stdout.rstrip()
    except (OSError, subprocess.CalledProcessError):
        return "(free not available)"
