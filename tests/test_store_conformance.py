"""One behaviour for every store: memory, local directory, and S3 over HTTP (moto).

The conformance tests run unchanged against each store kind. After them come
the parts that only some stores have: the simulated restore delay of the local
and memory stores, S3 error translation, the retry wrapper, and vault URLs.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import pytest
from botocore.stub import Stubber

from coldvault.errors import UserError
from coldvault.store.base import (
    ArchivedError,
    Capabilities,
    NotFoundError,
    ObjectInfo,
    PermissionDeniedError,
    RestoreInProgressError,
    Store,
    StoreError,
    TransientError,
)
from coldvault.store.limit import LimitedStore
from coldvault.store.local import LocalStore
from coldvault.store.memory import MemoryStore
from coldvault.store.retry import REPEATED_RETRY, RetryingStore
from coldvault.store.s3 import S3Store, parse_restore_header
from coldvault.store.url import open_store

import moto_server

DAY = 86400.0
COLD_CLASSES = ["GLACIER", "DEEP_ARCHIVE"]


def unique_bucket() -> str:
    return f"cv-test-{uuid.uuid4().hex[:16]}"


STORE_KINDS = ["memory", "local", "s3", "s3-stack", "s3-rclone"]
# rclone serve s3 has no cold tier; what S3Store does there instead: tests/test_rclone.py.
COLD_TIER_KINDS = [kind for kind in STORE_KINDS if kind != "s3-rclone"]


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path) -> Store:
    """A fresh, empty store of each kind; cold restores complete at once. s3-stack: S3 as
    every command opens it (open_store: retry, the concurrency limit, the store).
    s3-rclone: S3Store against `rclone serve s3`, a second S3 implementation."""
    if request.param == "memory":
        s = MemoryStore(restore_delay=0.0)
    elif request.param == "local":
        s = LocalStore(str(tmp_path / "vault"), restore_delay=0.0, fsync=False)
    else:
        endpoint = request.getfixturevalue("rclone_endpoint" if request.param == "s3-rclone" else "moto_endpoint")
        if request.param in ("s3", "s3-rclone"):
            s = S3Store(unique_bucket(), prefix="vault", endpoint_url=endpoint)
        else:
            s = open_store(f"s3://{unique_bucket()}/vault", endpoint_url=endpoint)
        assert s.create_bucket_if_missing() is True
    yield s
    s.close()


def names(infos) -> list[str]:
    return sorted(i.name for i in infos)


# --- conformance: every store -------------------------------------------------------


def test_put_get_round_trip(store):
    data = bytes(range(256)) * 100
    store.put("config", data)
    store.put("data/ab/abcdef", b"\x00packed\xff")
    store.put("empty", b"")
    assert store.get("config") == data
    assert store.get("data/ab/abcdef") == b"\x00packed\xff"
    assert store.get("empty") == b""


def test_overwrite_replaces_object(store):
    store.put("locks/one", b"first version, longer")
    store.put("locks/one", b"second")
    assert store.get("locks/one") == b"second"
    assert store.head("locks/one").size == 6
    assert names(store.list("locks/")) == ["locks/one"]


def test_overwrite_cold_with_hot_is_readable(store):
    store.put("data/p", b"cold", "DEEP_ARCHIVE")
    store.put("data/p", b"hot")
    assert store.get("data/p") == b"hot"
    assert not store.head("data/p").cold


def test_ranged_get(store):
    data = bytes(range(256)) * 4  # 1024 bytes
    store.put("data/pack", data)
    assert store.get("data/pack", 0, 5) == data[:5]
    assert store.get("data/pack", 100, 50) == data[100:150]
    assert store.get("data/pack", 1000) == data[1000:]
    assert store.get("data/pack", 1000, 100) == data[1000:]  # runs past the end
    assert store.get("data/pack", 1023, 1) == data[1023:]
    assert store.get("data/pack", 1024) == b""  # starts at the end
    assert store.get("data/pack", 5000, 10) == b""  # starts past the end
    assert store.get("data/pack", 10, 0) == b""


def test_get_missing_object(store):
    with pytest.raises(NotFoundError) as info:
        store.get("data/ab/missing")
    assert info.value.name == "data/ab/missing"
    assert "data/ab/missing" in str(info.value)
    with pytest.raises(NotFoundError):
        store.get("data/ab/missing", 10, 10)
    with pytest.raises(NotFoundError):
        store.head("data/ab/missing")


def test_head_of_hot_object(store):
    before = time.time()
    store.put("snapshots/s1", b"x" * 1234)
    info = store.head("snapshots/s1")
    assert isinstance(info, ObjectInfo)
    assert info.name == "snapshots/s1"
    assert info.size == 1234
    assert info.storage_class == "STANDARD"
    assert not info.cold and info.readable
    assert info.restore.status == "none"
    assert info.mtime is not None and before - 60 < info.mtime < time.time() + 60


def test_list_with_prefixes(store):
    objects = {
        "config": b"c",
        "data/ab/ab01": b"1" * 10,
        "data/ab/ab02": b"2" * 20,
        "data/cd/cd01": b"3" * 30,
        "index/i1": b"i",
        "snapshots/s1": b"s",
    }
    for name, data in objects.items():
        store.put(name, data)
    assert names(store.list()) == sorted(objects)
    assert names(store.list("")) == sorted(objects)
    assert names(store.list("data/")) == ["data/ab/ab01", "data/ab/ab02", "data/cd/cd01"]
    assert names(store.list("data/ab/")) == ["data/ab/ab01", "data/ab/ab02"]
    assert names(store.list("data/a")) == ["data/ab/ab01", "data/ab/ab02"]  # not a whole component
    assert names(store.list("data/ab/ab01")) == ["data/ab/ab01"]
    assert names(store.list("con")) == ["config"]
    assert list(store.list("locks/")) == []
    assert list(store.list("data/zz/")) == []
    sizes = {i.name: i.size for i in store.list("data/")}
    assert sizes == {"data/ab/ab01": 10, "data/ab/ab02": 20, "data/cd/cd01": 30}
    assert all(i.storage_class == "STANDARD" for i in store.list())


def test_list_of_empty_store(store):
    assert list(store.list()) == []


def test_delete(store):
    store.put("data/ab/ab01", b"one")
    store.put("data/ab/ab02", b"two")
    store.delete("data/ab/ab01")
    with pytest.raises(NotFoundError):
        store.get("data/ab/ab01")
    assert names(store.list("data/")) == ["data/ab/ab02"]
    store.delete("data/ab/ab01")  # already gone
    store.delete("never/there")
    assert store.get("data/ab/ab02") == b"two"


@pytest.mark.parametrize("store", COLD_TIER_KINDS, indirect=True)
@pytest.mark.parametrize("storage_class", COLD_CLASSES)
def test_cold_object_refuses_reads_until_restored(store, storage_class):
    data = b"cold pack contents"
    store.put("data/cold", data, storage_class)

    for start, length in ((0, None), (2, 4)):
        with pytest.raises(ArchivedError) as info:
            store.get("data/cold", start, length)
        assert type(info.value) is ArchivedError  # not RestoreInProgressError: nothing requested
        assert info.value.name == "data/cold"
        assert "data/cold" in str(info.value) and "restored" in str(info.value)

    head = store.head("data/cold")
    assert head.size == len(data)
    assert head.storage_class == storage_class
    assert head.cold and not head.readable
    assert head.restore.status == "none"
    [listed] = store.list("data/")
    assert listed.storage_class == storage_class and listed.cold


@pytest.mark.parametrize("store", COLD_TIER_KINDS, indirect=True)
@pytest.mark.parametrize("storage_class", COLD_CLASSES)
def test_restore_makes_cold_object_readable(store, storage_class):
    data = b"cold pack contents"
    store.put("data/cold", data, storage_class)
    assert store.restore("data/cold", days=3, tier="Bulk") is True
    assert store.restore("data/cold", days=3, tier="Bulk") is False  # already requested

    # All three stores finish at once here (restore_delay=0; moto by default).
    head = store.head("data/cold")
    assert head.restore.status == "restored"
    assert head.storage_class == storage_class  # restoring makes a copy; the class stays
    assert head.cold and head.readable
    assert head.restore.expiry is not None
    assert time.time() + 3 * DAY - 3600 < head.restore.expiry < time.time() + 3 * DAY + 3600
    assert store.get("data/cold") == data
    assert store.get("data/cold", 5, 4) == data[5:9]
    assert store.restore("data/cold") is False  # readable already


def test_restore_of_hot_object_is_not_a_request(store):
    store.put("index/i1", b"hot")
    assert store.restore("index/i1") is False
    assert store.get("index/i1") == b"hot"


def test_restore_of_missing_object(store):
    with pytest.raises(NotFoundError):
        store.restore("data/missing")


# --- the simulated cold tier of the local and memory stores ---------------------------


def test_local_store_on_a_file_system_without_directory_fsync(tmp_path, monkeypatch):
    """Some network and FUSE file systems answer EINVAL to fsync on a directory: writes go on."""
    import errno as errno_
    import stat as stat_

    real_fsync = os.fsync

    def fsync(fd):
        if stat_.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno_.EINVAL, "Invalid argument")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    s = LocalStore(str(tmp_path / "vault"), fsync=True)
    s.put("data/ab/pack1", b"x" * 10)
    s.delete("data/ab/pack1")
    s.put("index/i1", b"y")
    assert names(s.list("")) == ["index/i1"]


@pytest.mark.parametrize("store", COLD_TIER_KINDS, indirect=True)
def test_discard_partial_writes_leaves_objects_alone(store):
    store.put("data/ab/pack1", b"x" * 100, "GLACIER")
    store.put("index/i1", b"y" * 10)
    if isinstance(store, LocalStore):  # what a kill -9 mid-put leaves in a local vault
        ab = os.path.join(store.root, "data", "ab")
        dead_writer = ".tmp-999999999-456-pack2"
        live_writer = f".tmp-{os.getppid()}-456-pack4"  # a running process: maybe mid-write
        locks = os.path.join(store.root, "locks")
        os.makedirs(locks, exist_ok=True)
        for d, fn, body in ((ab, dead_writer, b"z" * 50), (ab, "pack3.cold", b"{}"),
                            (ab, live_writer, b"w"), (locks, ".tmp-999999999-1-lock", b"l")):
            with open(os.path.join(d, fn), "wb") as f:
                f.write(body)
        assert store.discard_partial_writes() == (2, 52)
        assert sorted(os.listdir(ab)) == sorted([live_writer, "pack1", "pack1.cold"])
        assert os.listdir(locks) == [".tmp-999999999-1-lock"]  # other processes write there
    assert store.discard_partial_writes() == (0, 0)
    assert sorted(names(store.list(""))) == ["data/ab/pack1", "index/i1"]
    assert store.head("data/ab/pack1").cold


@pytest.fixture(params=["memory", "local"])
def slow_restore_store(request, tmp_path) -> Store:
    """A store whose restores take 0.3 s, as real ones take hours."""
    if request.param == "memory":
        return MemoryStore(restore_delay=0.3)
    return LocalStore(str(tmp_path / "vault"), restore_delay=0.3, fsync=False)


def test_restore_in_progress_until_delay_passes(slow_restore_store):
    store = slow_restore_store
    store.put("data/cold", b"contents", "DEEP_ARCHIVE")
    assert store.restore("data/cold", tier="Standard") is True

    with pytest.raises(RestoreInProgressError) as info:
        store.get("data/cold")
    assert "data/cold" in str(info.value)
    head = store.head("data/cold")
    assert head.restore.status == "in-progress"
    assert head.restore.tier == "Standard"
    assert head.restore.ready_at is not None and head.restore.ready_at > time.time()
    assert store.restore("data/cold") is False  # one request is enough

    time.sleep(head.restore.ready_at - time.time() + 0.05)
    assert store.head("data/cold").restore.status == "restored"
    assert store.get("data/cold") == b"contents"


# --- S3 specifics --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, status, expiry",
    [
        (None, "none", None),
        ("", "none", None),
        ('ongoing-request="true"', "in-progress", None),
        (
            'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"',
            "restored",
            1356048000.0,
        ),
        ('ongoing-request="false"', "restored", None),
        ('ongoing-request="false", expiry-date="not a date"', "restored", None),
        ("something else", "none", None),
    ],
)
def test_parse_restore_header(header, status, expiry):
    state = parse_restore_header(header)
    assert (state.status, state.expiry) == (status, expiry)


def test_s3_prefixes_keep_vaults_apart(moto_endpoint):
    bucket = unique_bucket()
    one = S3Store(bucket, prefix="one/", endpoint_url=moto_endpoint)
    two = S3Store(bucket, prefix="one-more", endpoint_url=moto_endpoint)
    one.create_bucket_if_missing()
    assert two.create_bucket_if_missing() is False
    one.put("config", b"1")
    two.put("config", b"2")
    assert [i.name for i in one.list()] == ["config"]
    assert [i.name for i in two.list()] == ["config"]
    assert one.get("config") == b"1" and two.get("config") == b"2"
    assert one.url == f"s3://{bucket}/one/"


def test_s3_missing_bucket_is_named(moto_endpoint):
    store = S3Store(unique_bucket(), endpoint_url=moto_endpoint)
    for call in (lambda: store.get("config"), lambda: store.head("config"), lambda: list(store.list())):
        with pytest.raises(NotFoundError) as info:
            call()
        assert f"bucket {store.bucket} does not exist" in str(info.value)


def test_s3_unreachable_endpoint_is_transient(monkeypatch, caplog):
    secret = "sekrit-never-in-a-message"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDNEVERLOGGED")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    endpoint = f"http://127.0.0.1:{moto_server.free_port()}"  # nothing listens there
    sleeps = []
    store = RetryingStore(
        S3Store(unique_bucket(), endpoint_url=endpoint, connect_timeout=2, client_attempts=1),
        attempts=3,
        sleep=sleeps.append,
    )
    caplog.set_level(logging.DEBUG, logger="coldvault")
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        store.get("config")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert endpoint in message
    assert "3 attempts failed" in message
    assert len(sleeps) == 2
    for text in [message, caplog.text]:
        assert secret not in text and "AKIDNEVERLOGGED" not in text


@pytest.fixture
def stubbed_s3(monkeypatch):
    """An S3Store whose client answers from botocore's Stubber: failures moto cannot produce."""
    for var, value in moto_server.DUMMY_AWS_ENV.items():
        monkeypatch.setenv(var, value)
    store = S3Store("bucket", endpoint_url="http://127.0.0.1:9")
    with Stubber(store._client) as stubber:
        yield store, stubber
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    "code, status, error",
    [
        ("SlowDown", 503, TransientError),
        ("InternalError", 500, TransientError),
        ("RequestTimeout", 400, TransientError),
        ("SomethingNew", 502, TransientError),
        ("AccessDenied", 403, PermissionDeniedError),
        ("InvalidAccessKeyId", 403, PermissionDeniedError),
        ("SignatureDoesNotMatch", 403, PermissionDeniedError),
        ("NoSuchKey", 404, NotFoundError),
        ("InvalidArgument", 400, StoreError),
    ],
)
def test_s3_error_translation(stubbed_s3, code, status, error):
    store, stubber = stubbed_s3
    stubber.add_client_error("get_object", service_error_code=code, http_status_code=status)
    with pytest.raises(error) as info:
        store.get("data/p")
    assert type(info.value) is error
    assert "data/p" in str(info.value) and "127.0.0.1:9" in str(info.value)


def test_s3_restore_in_progress(stubbed_s3):
    """What moto does not emulate: a restore that takes time (moto finishes at once)."""
    store, stubber = stubbed_s3
    stubber.add_client_error("get_object", service_error_code="InvalidObjectState", http_status_code=403)
    stubber.add_response(
        "head_object",
        {"ContentLength": 4, "StorageClass": "DEEP_ARCHIVE", "Restore": 'ongoing-request="true"'},
    )
    stubber.add_client_error("restore_object", service_error_code="RestoreAlreadyInProgress", http_status_code=409)
    with pytest.raises(RestoreInProgressError):
        store.get("data/cold")
    assert store.restore("data/cold") is False


def test_s3_restore_rejects_unknown_tier(moto_endpoint):
    store = S3Store(unique_bucket(), endpoint_url=moto_endpoint)
    store.create_bucket_if_missing()
    store.put("data/cold", b"x", "GLACIER")
    with pytest.raises(StoreError, match="tier"):
        store.restore("data/cold", tier="Instant")


# --- RetryingStore -------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A memory store behind a bad network: the first `failures` calls fail."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        self.calls = 0

    def _maybe_fail(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError(f"connection reset (call {self.calls})")

    def get(self, name, start=0, length=None):
        self._maybe_fail()
        return super().get(name, start, length)

    def put(self, name, data, storage_class=None):
        self._maybe_fail()
        super().put(name, data, storage_class)

    def list(self, prefix=""):
        # Fails half-way through the listing, after yielding an object.
        self.calls += 1
        items = sorted(super().list(prefix), key=lambda i: i.name)
        for n, item in enumerate(items):
            if n == 1 and self.calls <= self.failures:
                raise TransientError("connection reset while listing")
            yield item


def test_retry_then_succeed():
    inner = FlakyStore(failures=2)
    sleeps = []
    store = RetryingStore(inner, attempts=3, base_delay=1.0, max_delay=10.0, sleep=sleeps.append)
    store.put("config", b"hello")
    assert inner.calls == 3
    assert inner.get("config") == b"hello"
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # backoff grows


def test_retry_gives_up_after_attempts():
    inner = FlakyStore(failures=100)
    sleeps = []
    store = RetryingStore(inner, attempts=4, base_delay=0.1, sleep=sleeps.append)
    with pytest.raises(TransientError) as info:
        store.get("config")
    assert inner.calls == 4
    assert len(sleeps) == 3
    assert "4 attempts failed" in str(info.value)
    assert "connection reset" in str(info.value)


def test_permanent_errors_are_not_retried():
    inner = FlakyStore(failures=0)
    sleeps = []
    store = RetryingStore(inner, attempts=5, sleep=sleeps.append)
    with pytest.raises(NotFoundError):
        store.get("missing")
    assert inner.calls == 1
    inner.put("data/cold", b"x", "DEEP_ARCHIVE")
    with pytest.raises(ArchivedError):
        store.get("data/cold")
    assert inner.calls == 3  # the put above, and one get
    assert sleeps == []


def test_list_retry_yields_each_object_once():
    inner = FlakyStore(failures=0)
    for name in ("a", "b", "c"):
        inner.put(name, b"x")
    inner.failures, inner.calls = 1, 0  # the first listing breaks off after "a"
    store = RetryingStore(inner, attempts=3, sleep=lambda s: None)
    assert [i.name for i in store.list()] == ["a", "b", "c"]
    assert inner.calls == 2


def test_retry_delay_is_capped():
    store = RetryingStore(MemoryStore(), base_delay=1.0, max_delay=5.0)
    for retry in range(1, 20):
        ceiling = min(5.0, 2.0 ** (retry - 1))
        assert ceiling / 2 <= store.delay(retry) <= ceiling


def test_retries_get_louder(caplog):
    caplog.set_level(logging.DEBUG, logger="coldvault.store.retry")
    store = RetryingStore(FlakyStore(failures=4), attempts=5, sleep=lambda s: None)
    store.put("config", b"x")
    levels = [r.levelno for r in caplog.records if r.name == "coldvault.store.retry"]
    # Louder as they repeat, but never WARNING: a plain run prints only the final error.
    assert levels == [logging.INFO, REPEATED_RETRY, REPEATED_RETRY, REPEATED_RETRY]
    assert logging.INFO < REPEATED_RETRY < logging.WARNING


# --- vault URLs ----------------------------------------------------------------------


def bare(store: Store) -> Store:
    """The store at the bottom of the stack that open_store builds: retry, limit, store."""
    assert isinstance(store, RetryingStore) and isinstance(store.inner, LimitedStore)
    return store.inner.inner


def test_open_plain_path(tmp_path, monkeypatch):
    monkeypatch.delenv("COLDVAULT_LOCAL_RESTORE_DELAY", raising=False)
    store = bare(open_store(str(tmp_path / "vault")))
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path / "vault")
    assert store.restore_delay == 2.0


def test_open_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = bare(open_store("vault"))
    assert isinstance(store, LocalStore) and store.root == str(tmp_path / "vault")


def test_open_file_url(tmp_path):
    store = bare(open_store(f"file://{tmp_path}/my%20vault"))
    assert isinstance(store, LocalStore) and store.root == str(tmp_path / "my vault")
    assert bare(open_store(f"file://localhost{tmp_path}")).root == str(tmp_path)
    with pytest.raises(UserError):
        open_store("file://otherhost/srv/vault")


def test_open_local_restore_delay(tmp_path, monkeypatch):
    monkeypatch.setenv("COLDVAULT_LOCAL_RESTORE_DELAY", "0.5")
    assert bare(open_store(str(tmp_path))).restore_delay == 0.5
    assert bare(open_store(str(tmp_path), restore_delay=0)).restore_delay == 0
    monkeypatch.setenv("COLDVAULT_LOCAL_RESTORE_DELAY", "soon")
    with pytest.raises(UserError, match="COLDVAULT_LOCAL_RESTORE_DELAY"):
        open_store(str(tmp_path))


def test_open_s3_url(monkeypatch):
    monkeypatch.setenv("COLDVAULT_S3_ENDPOINT", "http://127.0.0.1:9")
    store = open_store("s3://my-bucket/backups/home")
    inner = bare(store)
    assert isinstance(inner, S3Store)
    assert (inner.bucket, inner.prefix, inner.endpoint) == ("my-bucket", "backups/home/", "http://127.0.0.1:9")
    assert store.url == "s3://my-bucket/backups/home/"
    other = bare(open_store("s3://my-bucket", endpoint_url="http://127.0.0.1:10"))
    assert (other.prefix, other.endpoint) == ("", "http://127.0.0.1:10")


def test_open_s3_retry_and_timeout_settings(monkeypatch):
    monkeypatch.setenv("COLDVAULT_S3_ENDPOINT", "http://127.0.0.1:9")
    store = open_store("s3://my-bucket")
    config = bare(store)._client.meta.config
    assert (store.attempts, store.base_delay) == (6, 0.5)
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    assert config.retries["total_max_attempts"] == 1  # one retry layer: RetryingStore
    monkeypatch.setenv("COLDVAULT_RETRY_ATTEMPTS", "20")
    monkeypatch.setenv("COLDVAULT_RETRY_DELAY", "0.05")
    monkeypatch.setenv("COLDVAULT_S3_TIMEOUT", "2.5")
    store = open_store("s3://my-bucket")
    config = bare(store)._client.meta.config
    assert (store.attempts, store.base_delay) == (20, 0.05)
    assert (config.connect_timeout, config.read_timeout) == (2.5, 2.5)
    for var, bad in (("COLDVAULT_RETRY_DELAY", "-1"), ("COLDVAULT_S3_TIMEOUT", "0"), ("COLDVAULT_S3_TIMEOUT", "nan")):
        monkeypatch.setenv(var, bad)
        with pytest.raises(UserError, match=var):
            open_store("s3://my-bucket")
        monkeypatch.delenv(var)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bad bucket/x", "s3://b?x=1"])
def test_open_bad_s3_url(url):
    with pytest.raises(UserError) as info:
        open_store(url)
    assert "\n" not in str(info.value)


def test_open_memory_url():
    assert isinstance(bare(open_store("memory://")), MemoryStore)


@pytest.mark.parametrize("url", ["gs://bucket/x", "ftp://host/vault", "memory://name", ""])
def test_open_unknown_url(url):
    with pytest.raises(UserError) as info:
        open_store(url)
    assert "\n" not in str(info.value)


def test_capabilities_reach_through_the_retry_wrapper(tmp_path, moto_endpoint):
    """What a store is, asked of the store itself, wrapped or not: callers never guess from
    its type or its attributes."""
    local = LocalStore(str(tmp_path / "vault"), restore_delay=7.0)
    assert local.capabilities() == Capabilities(simulated_restore_delay=7.0, local_reads=True)
    assert RetryingStore(local).capabilities() == local.capabilities()
    assert MemoryStore(restore_delay=0.3).capabilities() == Capabilities(0.3, local_reads=True)
    s3 = open_store(f"s3://{unique_bucket()}/vault", endpoint_url=moto_endpoint)
    # A real cold tier, remote, as many requests at once as its connection pool holds.
    assert isinstance(s3, RetryingStore) and s3.capabilities() == Capabilities(connections=16)
    # Creating the bucket goes through the wrapper too (retried there); other stores have none to create.
    assert s3.create_bucket_if_missing() is True and s3.create_bucket_if_missing() is False
    s3.put("config", b"settings")
    assert s3.get("config") == b"settings"
    assert local.create_bucket_if_missing() is False and RetryingStore(local).create_bucket_if_missing() is False


def test_open_s3_against_moto(moto_endpoint):
    bucket = unique_bucket()
    store = open_store(f"s3://{bucket}/vault", endpoint_url=moto_endpoint)
    assert store.call("creating the bucket", bare(store).create_bucket_if_missing) is True
    store.put("config", b"settings")
    assert store.get("config") == b"settings"
    assert [i.name for i in store.list()] == ["config"]
