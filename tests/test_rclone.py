"""A second S3 implementation: `rclone serve s3` (tests/rclone_server.py), beside moto.

The store conformance suite runs against it too (test_store_conformance.py, kind
"s3-rclone"). Here: what rclone does differently, and what S3Store makes of it
(docs/cold-storage.md, "S3-compatible servers"), then one vault end to end through
the `coldvault` command: init, backup, restore, check --read-data, a FUSE mount.
"""

from __future__ import annotations

import logging
import os
import pathlib
import uuid

import boto3
import botocore.config
import pytest
from botocore.stub import Stubber

from cvtools import diff_signatures, run, signature, vault_env
from mounttools import mounted
from test_cli_dir import make_tree

from coldvault.store.base import HOT_CLASS, NotFoundError, StoreError
from coldvault.store.s3 import S3Store
from coldvault.store.url import open_store

STATE = "user.coldvault.state"  # the mount's xattr: hot, cold, restoring, restored
NO_COLD_TIER = "has no cold tier (it does not implement RestoreObject)"


def unique_bucket() -> str:
    return f"cv-rclone-{uuid.uuid4().hex[:16]}"


def new_store(endpoint: str) -> S3Store:
    store = S3Store(unique_bucket(), prefix="vault", endpoint_url=endpoint)
    assert store.create_bucket_if_missing() is True
    return store


def raw_client(endpoint: str):
    """A plain boto3 client, as another S3 tool (or an older coldvault) would write."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, config=botocore.config.Config(s3={"addressing_style": "path"})
    )


# --- the store: what differs, and what S3Store does about it ------------------------


@pytest.mark.parametrize("storage_class", ["DEEP_ARCHIVE", "GLACIER"])
def test_cold_class_without_a_cold_tier_is_stored_standard_with_one_warning(rclone_endpoint, storage_class, caplog):
    store = new_store(rclone_endpoint)
    assert store.capabilities().cold_tier is True  # not asked yet: nothing cold written
    caplog.set_level(logging.WARNING, logger="coldvault")
    store.put("data/ab/pack1", b"pack one", storage_class)
    store.put("data/ab/pack2", b"pack two", storage_class)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{rclone_endpoint} {NO_COLD_TIER}: objects asked for in {storage_class} "
                        f"are stored as STANDARD in bucket {store.bucket}"]
    assert store.capabilities().cold_tier is False
    info = store.head("data/ab/pack1")
    assert (info.storage_class, info.cold, info.readable) == (HOT_CLASS, False, True)
    assert {i.storage_class for i in store.list("data/")} == {HOT_CLASS}
    assert store.get("data/ab/pack2") == b"pack two"
    assert store.get("data/ab/pack2", 5, 3) == b"two"
    assert store.restore("data/ab/pack1") is False  # readable as it is: nothing to ask for
    # Through the stack every command opens, the answer reaches the top.
    stacked = open_store(f"s3://{store.bucket}/other", endpoint_url=rclone_endpoint)
    stacked.put("data/cd/pack3", b"three", storage_class)
    assert stacked.capabilities().cold_tier is False
    assert stacked.head("data/cd/pack3").storage_class == HOT_CLASS
    store.close()
    stacked.close()


def test_cold_class_on_a_real_cold_tier_is_kept(moto_endpoint, caplog):
    """The same calls against moto, which has a cold tier: asked once, the class stays."""
    store = new_store(moto_endpoint)
    caplog.set_level(logging.WARNING, logger="coldvault")
    store.put("data/ab/pack1", b"pack one", "DEEP_ARCHIVE")
    assert store.capabilities().cold_tier is True
    assert store.head("data/ab/pack1").storage_class == "DEEP_ARCHIVE"
    assert not store.head("data/ab/pack1").readable
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    store.close()


def test_object_written_cold_by_another_client_is_readable(rclone_endpoint):
    """rclone echoes on HEAD the class a PUT named (from memory), and refuses RestoreObject:
    the first restore request tells S3Store there is no cold tier, and the object reads."""
    store = new_store(rclone_endpoint)
    client = raw_client(rclone_endpoint)
    client.put_object(Bucket=store.bucket, Key="vault/data/ab/old", Body=b"old pack", StorageClass="DEEP_ARCHIVE")
    client.close()
    assert store.head("data/ab/old").storage_class == "DEEP_ARCHIVE"  # what rclone says
    assert store.restore("data/ab/old") is False
    assert store.capabilities().cold_tier is False
    assert store.head("data/ab/old").storage_class == HOT_CLASS
    assert store.head("data/ab/old").readable
    assert store.get("data/ab/old") == b"old pack"
    with pytest.raises(NotFoundError):
        store.restore("data/ab/never-written")
    store.close()


def test_ranged_read_ignores_the_whole_object_checksum(rclone_endpoint):
    """rclone sends the CRC of the whole object with a ranged GET too; botocore checked a
    range against it and failed every ranged read. A whole read is still checked."""
    store = new_store(rclone_endpoint)
    data = os.urandom(100_000)
    store.put("data/ab/pack", data)
    assert store.get("data/ab/pack", 1000, 5000) == data[1000:6000]
    assert store.get("data/ab/pack", 99_000) == data[99_000:]
    assert store.get("data/ab/pack") == data
    store.close()


def test_request_the_endpoint_does_not_implement_is_not_retried(monkeypatch):
    """NotImplemented (501) says the server lacks the request: a clear, permanent error,
    not a transient one retried six times (the 5xx rule). botocore's Stubber answers."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3Store("bucket", endpoint_url="http://127.0.0.1:9")
    with Stubber(store._client) as stubber:  # noqa: SLF001 - botocore's stub on the one client
        stubber.add_client_error("put_object", service_error_code="NotImplemented", http_status_code=501)
        with pytest.raises(StoreError) as info:
            store.put("config", b"x")
    assert type(info.value) is StoreError
    assert str(info.value) == ("writing object config in bucket bucket at http://127.0.0.1:9 failed: "
                               "http://127.0.0.1:9 does not implement this request (NotImplemented, HTTP 501)")


# --- end to end: the coldvault command against rclone --------------------------------


@pytest.mark.fuse
def test_backup_restore_check_and_mount_on_rclone(rclone_endpoint, tmp_path):
    """A vault meant for Deep Archive, on an endpoint without a cold tier: the backup says
    once that the data is stored as STANDARD, and everything reads back without a thaw."""
    tree = str(tmp_path / "tree")
    make_tree(tree, big_file=12 * 1024 * 1024, n_files=300)
    repo = f"s3://{unique_bucket()}/vaults/home"
    env = vault_env(repo, COLDVAULT_S3_ENDPOINT=rclone_endpoint)
    run(["init", "--data-storage-class", "DEEP_ARCHIVE", "--pack-size", "4"], env)
    backup = run(["backup", "dir", tree, "--name", "home", "--json"], env)
    assert backup.json()["incomplete"] is False
    assert backup.err.count(NO_COLD_TIER) == 1, backup.err
    assert "objects asked for in DEEP_ARCHIVE are stored as STANDARD" in backup.err

    target = str(tmp_path / "restored")
    run(["restore", "dir", "latest", "--target", target], env)
    want, got = signature(tree), signature(target)
    assert not diff_signatures(want, got), diff_signatures(want, got)

    report = run(["check", "--read-data", "--json"], env).json()
    assert report["ok"] is True
    assert report["read_data"]["packs_read"] == report["counts"]["packs"] > 3
    assert report["skipped"]["cold_packs"] == []

    rel = "d001/sub1/f00001.dat"
    with mounted(env, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        for name in (rel, "big.bin", "odd/фото_日本.txt"):
            path = m / f"files/home/latest/{name}"
            assert os.getxattr(path, STATE) == b"hot"
            with open(path, "rb") as f:
                assert f.read() == pathlib.Path(tree, name).read_bytes(), name
