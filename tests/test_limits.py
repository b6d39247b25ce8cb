"""Bandwidth limits (--limit-upload, --limit-download; store/throttle.py).

The token bucket runs on a clock of the test's own, so what it lets through and how
long it makes callers wait are exact numbers, not timings. End to end, a real backup
and restore run with the limits (into a local vault and into moto over HTTP): `-v`
names the limit and counts the bytes that went through the throttle, and the restore
is byte-identical.
"""

from __future__ import annotations

import os
import re
import threading
import uuid

import pytest

from coldvault.store import throttle
from coldvault.store.memory import MemoryStore
from coldvault.store.throttle import Limits, ThrottledStore, TokenBucket
from coldvault.store.url import UNLIMITED_PREFIXES, open_store
from cvtools import run, signature, vault_env


class FakeClock:
    """A clock that moves only when a caller sleeps."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds


def test_bucket_lets_one_second_burst_then_holds_to_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock.time, sleep=clock.sleep)
    assert bucket.take(1000) == 0  # one second's worth passes at once
    assert bucket.take(500) == pytest.approx(0.5)
    assert bucket.take(2000) == pytest.approx(2.0)
    clock.now += 10  # a pause refills at most one second's worth
    assert bucket.take(1000) == 0
    assert bucket.take(1) == pytest.approx(0.001)
    assert bucket.passed == 4501
    assert bucket.waited == pytest.approx(2.501)


def test_bucket_never_lets_more_than_rate_times_time_plus_one_burst():
    clock = FakeClock()
    bucket = TokenBucket(4096, clock=clock.time, sleep=clock.sleep)
    start = clock.now
    sent = 0
    sizes = [1, 100, 4096, 70_000, 3, 65_536, 12_345, 1_000_000, 17]
    for i, n in enumerate(sizes * 5):
        bucket.take(n)
        sent += n
        assert sent <= 4096 * (clock.now - start) + 4096 + 1e-6
        if i % 3 == 0:
            clock.now += 0.25  # callers also spend time between calls
    assert bucket.passed == sent


def test_bucket_is_shared_by_threads_in_the_order_they_asked():
    clock = FakeClock()
    clock.sleep = lambda seconds: clock.sleeps.append(seconds)  # a frozen clock: only the debt counts
    bucket = TokenBucket(1000, clock=clock.time, sleep=clock.sleep)
    threads = [threading.Thread(target=bucket.take, args=(1000,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(clock.sleeps) == pytest.approx([1, 2, 3, 4, 5, 6, 7])  # the first passed at once
    assert bucket.passed == 8000


def test_throttled_store_counts_bodies_both_ways_but_not_locks():
    clock = FakeClock()
    up = TokenBucket(1000, clock=clock.time, sleep=clock.sleep)
    down = TokenBucket(500, clock=clock.time, sleep=clock.sleep)
    store = ThrottledStore(MemoryStore(), Limits(up, down), UNLIMITED_PREFIXES)
    store.put("data/one", b"x" * 3000)
    store.put("locks/mine", b"l" * 9000)
    assert up.passed == 3000
    assert clock.sleeps == [pytest.approx(2.0)]
    assert store.get("data/one", 1000, 1000) == b"x" * 1000
    assert store.get("locks/mine") == b"l" * 9000
    store.head("data/one")
    list(store.list("data/"))
    assert down.passed == 1000
    assert store.capabilities() == MemoryStore().capabilities()


@pytest.fixture
def process_limits():
    yield throttle.set_limits
    throttle.set_limits(None, None)


def test_every_opened_store_goes_through_the_process_buckets(process_limits):
    assert not throttle.process_limits()
    plain = open_store("memory://")
    plain.put("data/a", b"a" * 10)
    limits = process_limits(1024, 2048)
    first, second = open_store("memory://"), open_store("memory://")
    first.put("data/a", b"a" * 700)
    second.put("data/b", b"b" * 300)
    second.get("data/b")
    assert limits.upload.passed == 1000  # one bucket for both stores
    assert limits.download.passed == 300
    assert limits.upload.rate == 1024 * 1024 and limits.download.rate == 2048 * 1024


def test_the_async_face_of_a_store_goes_through_the_buckets_too(process_limits):
    """The mount and the uploader call the store through AsyncStore (worker threads)."""
    import trio

    from coldvault.store.aio import AsyncStore

    limits = process_limits(4096, 4096)
    store = AsyncStore(open_store("memory://"))

    async def main():
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(store.put, f"data/{i}", bytes(1000))
        for i in range(4):
            assert await store.get(f"data/{i}", 0, 500) == bytes(500)

    trio.run(main)
    assert limits.upload.passed == 4000 and limits.download.passed == 2000


def _tree(root) -> int:
    """A few MiB that do not compress: what goes up is at least their size."""
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (root / "sub" / "more.bin").write_bytes(os.urandom(1024 * 1024))
    (root / "sub" / "note.txt").write_text("hello\n")
    return 3 * 1024 * 1024


def _passed(stderr: str, what: str, kib: int) -> int:
    assert f"coldvault: {what} limited to {kib} KiB/s" in stderr, stderr
    m = re.search(rf"coldvault: {what} limit {kib} KiB/s: (\d+) bytes passed, held back [\d.]+ s in all", stderr)
    assert m, stderr
    return int(m.group(1))


def _backup_and_restore_limited(tmp_path, repo: str, env_extra: dict) -> None:
    src = tmp_path / "src"
    size = _tree(src)
    env = vault_env(repo, **env_extra)
    run(["init"], env)
    r = run(["-v", "backup", "dir", str(src), "--name", "src", "--limit-upload", "768"], env)
    assert _passed(r.err, "upload", 768) >= size
    assert "download limit" not in r.err
    target = tmp_path / "restored"
    r = run(["restore", "dir", "latest", "--target", str(target), "-v"],
            {**env, "COLDVAULT_LIMIT_DOWNLOAD": "1536"})
    assert _passed(r.err, "download", 1536) >= size
    assert signature(str(target)) == signature(str(src))


def test_backup_and_restore_through_the_limits_into_a_local_vault(tmp_path):
    _backup_and_restore_limited(tmp_path, str(tmp_path / "vault"), {})


def test_backup_and_restore_through_the_limits_into_s3(tmp_path, moto_endpoint):
    repo = f"s3://cv-limits-{uuid.uuid4().hex[:10]}/vault"
    _backup_and_restore_limited(tmp_path, repo, {"COLDVAULT_S3_ENDPOINT": moto_endpoint})


def test_the_command_line_beats_the_environment(tmp_path):
    env = vault_env(str(tmp_path / "vault"), COLDVAULT_LIMIT_UPLOAD="100")
    r = run(["init", "-v", "--limit-upload", "4096"], env)
    assert "upload limited to 4096 KiB/s" in r.err and "100 KiB/s" not in r.err


BAD = [(where, value) for where in ("--limit-upload", "--limit-download", "COLDVAULT_LIMIT_UPLOAD")
       for value in ("0", "-5", "fast", "nan", "inf")]


@pytest.mark.parametrize("where, value", BAD)
def test_bad_limits_are_one_line_and_exit_2_before_anything_is_done(tmp_path, where, value):
    vault = tmp_path / "vault"
    env = vault_env(str(vault))
    args = ["init"]
    if where.startswith("--"):
        args += [f"{where}={value}"]
    else:
        env[where] = value
    r = run(args, env, check=False)
    assert r.code == 2, r
    assert r.err.splitlines() == [f"coldvault: error: {where} must be a positive number of KiB per second, "
                                  f"not {value!r}"]
    assert not vault.exists()


def test_an_empty_variable_is_no_limit(tmp_path):
    r = run(["init", "-v"], vault_env(str(tmp_path / "vault"), COLDVAULT_LIMIT_UPLOAD=""))
    assert "limit" not in r.err and (tmp_path / "vault").exists()


def test_help_shows_the_limits():
    for args in (["--help"], ["backup", "dir", "--help"], ["restore", "dir", "--help"], ["mount", "--help"]):
        out = run(args).out
        assert "--limit-upload KiB/s" in out and "--limit-download KiB/s" in out, args
