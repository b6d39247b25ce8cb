"""Nothing lost, nothing escapes: S3 behind a network that resets, truncates, stalls and fails.

tests/faultproxy.py sits between coldvault and the moto server and breaks a share of the
requests. Every such failure must be a TransientError (retried by RetryingStore); with
enough attempts, backup, restore and a FUSE read come out byte for byte; when the store
keeps failing, the command exits 15 with one line and no traceback.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
import zlib

import pytest

from cvtools import diff_signatures, run, signature, vault_env
from faultproxy import KINDS, FaultProxy
from mounttools import mounted

from coldvault.store.base import TransientError
from coldvault.store.s3 import S3Store

UNREACHABLE = 15
TIMEOUT = 1.0  # COLDVAULT_S3_TIMEOUT in these tests: a stall of 1.5 s outlasts it


def unique_bucket() -> str:
    return f"cv-{uuid.uuid4().hex[:12]}"


def faulty_env(repo: str, endpoint: str, attempts: int = 20) -> dict:
    return vault_env(
        repo,
        COLDVAULT_S3_ENDPOINT=endpoint,
        COLDVAULT_RETRY_ATTEMPTS=str(attempts),
        COLDVAULT_RETRY_DELAY="0.02",
        COLDVAULT_S3_TIMEOUT=str(TIMEOUT),
    )


def error_lines(err: str) -> list[str]:
    """stderr of a failed run: exactly one error line, maybe a hint, nothing else."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) in (1, 2), err
    assert lines[0].startswith("coldvault: error: "), err
    if len(lines) == 2:
        assert lines[1].startswith("coldvault: hint: "), err
    return lines


# --- the store: every transport failure is a TransientError -------------------------


@pytest.fixture(scope="module")
def seeded_bucket(moto_endpoint):
    """A bucket with a 1 MiB hot object, a small GLACIER object and a listing of 30 keys."""
    direct = S3Store(unique_bucket(), endpoint_url=moto_endpoint)
    direct.create_bucket_if_missing()
    data = os.urandom(1 << 20)
    direct.put("data/big", data)
    direct.put("data/cold", b"cold", "GLACIER")
    for n in range(30):
        direct.put(f"index/{n:04d}-{'x' * 60}", b"i")
    yield direct.bucket, data
    direct.close()


OPERATIONS = {
    "get": lambda s: s.get("data/big"),
    "get-range": lambda s: s.get("data/big", 1000, 300_000),
    "head": lambda s: s.head("data/big"),
    "list": lambda s: list(s.list()),
    "put": lambda s: s.put("data/new", b"n" * 200_000),
    "delete": lambda s: s.delete("data/new"),
    "restore": lambda s: s.restore("data/cold", 1, "Standard"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_transport_failure_is_transient(moto_endpoint, seeded_bucket, operation, kind):
    """Each call, each fault, at several cut points (headers or body): a TransientError
    naming the endpoint, never a urllib3 or http.client exception, never wrong data."""
    bucket, _ = seeded_bucket
    with FaultProxy(moto_endpoint, rate=1.0, seed=zlib.crc32(f"{operation} {kind}".encode()), kinds=[kind], stall=1.5) as proxy:
        store = S3Store(bucket, endpoint_url=proxy.endpoint, connect_timeout=TIMEOUT, read_timeout=TIMEOUT)
        try:
            for _ in range(3):
                with pytest.raises(TransientError) as info:
                    OPERATIONS[operation](store)
                assert proxy.endpoint in str(info.value)
        finally:
            store.close()
        assert proxy.injected[kind] >= 3


def test_short_body_is_retried_not_damage(moto_endpoint, seeded_bucket):
    """A cut-short GET, whole or ranged, is retried through RetryingStore and the bytes come back whole."""
    from coldvault.store.retry import RetryingStore

    bucket, data = seeded_bucket
    with FaultProxy(moto_endpoint, rate=0.5, seed=7, kinds=["truncate", "reset-body"]) as proxy:
        store = RetryingStore(S3Store(bucket, endpoint_url=proxy.endpoint), attempts=30, base_delay=0.01)
        try:
            for _ in range(5):
                assert store.get("data/big") == data
                assert store.get("data/big", 5000, 100_000) == data[5000:105_000]
                assert store.get("data/big", len(data) - 10, 100) == data[-10:]
        finally:
            store.close()
        assert sum(proxy.injected.values()) > 0


# --- whole commands through a bad network -------------------------------------------


def make_tree(root) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("quarterly report\n" * 5000)
    (root / "docs" / "empty").write_bytes(b"")
    (root / "photos").mkdir()
    for n in range(4):
        (root / "photos" / f"img{n}.jpg").write_bytes(os.urandom(50_000 + n * 1000))
    (root / "video.bin").write_bytes(os.urandom(5 << 20))


def test_backup_restore_mount_at_30_percent_faults(tmp_path, moto_endpoint):
    src = tmp_path / "src"
    make_tree(src)
    with FaultProxy(moto_endpoint, rate=0.3, seed=30) as proxy:
        env = faulty_env(f"s3://{unique_bucket()}/vault", proxy.endpoint)
        run(["init"], env)
        run(["backup", "dir", str(src), "--name", "src"], env)
        after_backup = sum(proxy.injected.values())
        assert after_backup > 0

        target = tmp_path / "restored"
        r = run(["restore", "dir", "latest", "--source", "src", "--target", str(target)], env)
        assert "Traceback" not in r.err
        assert diff_signatures(signature(src), signature(target)) == []
        after_restore = sum(proxy.injected.values())
        assert after_restore > after_backup

        with mounted(env, tmp_path / "mnt") as m:
            for rel in ("video.bin", "docs/report.txt", "photos/img3.jpg"):
                with open(m / f"files/src/latest/{rel}", "rb") as f:
                    assert f.read() == (src / rel).read_bytes(), rel
            assert "Traceback" not in m.log()
        assert sum(proxy.injected.values()) > after_restore
        assert len(proxy.injected) >= 4, proxy.injected  # most kinds of fault really happened


def test_store_that_keeps_failing_exits_15_with_one_line(tmp_path, moto_endpoint):
    src = tmp_path / "src"
    (src).mkdir()
    (src / "a").write_text("a")
    repo = f"s3://{unique_bucket()}/vault"
    run(["init"], vault_env(repo, COLDVAULT_S3_ENDPOINT=moto_endpoint))
    with FaultProxy(moto_endpoint, rate=1.0, seed=1, kinds=["reset-body", "truncate", "503", "500"]) as proxy:
        env = faulty_env(repo, proxy.endpoint, attempts=3)
        for args in (["backup", "dir", str(src)], ["snapshots"]):
            r = run(args, env, check=False)
            assert r.code == UNREACHABLE, r.err
            line = error_lines(r.err)[0]
            assert proxy.endpoint in line and "all 3 attempts failed" in line


# --- an unreachable endpoint: one line, retries only with -v ------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("command", ["snapshots", "backup"])
def test_unreachable_endpoint_prints_one_line(tmp_path, command):
    command = ["snapshots"] if command == "snapshots" else ["backup", "dir", str(tmp_path)]
    """A cron job against a dead endpoint mails one line (coldvault used to print a warning
    per retry from the third failure on); -v shows every retry."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = faulty_env("s3://some-bucket/x", endpoint, attempts=4)
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    r = run(command, env, check=False, timeout=120)
    assert r.code == UNREACHABLE
    line = error_lines(r.err)[0]
    assert endpoint in line and "all 4 attempts failed" in line

    r = run(["-v", *command], env, check=False, timeout=120)
    assert r.code == UNREACHABLE
    assert "Traceback" not in r.err
    retries = [x for x in r.err.splitlines() if "retrying in" in x]
    assert [f"attempt {n} of 4" in x for n, x in enumerate(retries, 1)] == [True] * 3, r.err
    assert [x for x in r.err.splitlines() if x.startswith("coldvault: error:")] == [line]


def test_mount_read_that_keeps_failing_is_eio(tmp_path, moto_endpoint):
    """A read the retries cannot save is EIO with one log line naming the file, and the
    mount keeps serving: once the network heals, the same file reads whole."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(300_000)
    (src / "photo.jpg").write_bytes(data)
    with FaultProxy(moto_endpoint, rate=0.0, seed=2, kinds=["reset-body", "truncate", "503"]) as proxy:
        env = faulty_env(f"s3://{unique_bucket()}/vault", proxy.endpoint, attempts=3)
        run(["init"], env)
        run(["backup", "dir", str(src), "--name", "src"], env)
        with mounted(env, tmp_path / "mnt") as m:
            path = m / "files/src/latest/photo.jpg"
            assert os.path.getsize(path) == len(data)
            proxy.rate = 1.0
            with pytest.raises(OSError) as info:
                with open(path, "rb") as f:
                    f.read()
            assert info.value.errno == errno.EIO
            log = m.log()
            assert "Traceback" not in log and "unexpected error" not in log, log
            failures = [x for x in log.splitlines() if "giving up" in x]
            assert failures and all("photo.jpg" in x for x in failures), log
            proxy.rate = 0.0
            with open(path, "rb") as f:
                assert f.read() == data
