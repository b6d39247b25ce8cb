"""The one home of cold data (coldvault.vault.thaw): the ready-time estimate, the poll policy,
the state of a set of packs, and the commands that use them (mount, restore zfs --wait).

The estimate is asked of real stores (local, memory, S3 behind the retry wrapper) through
their capabilities; the commands run as a user runs them.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from coldvault.errors import UserError
from coldvault.store.base import ObjectInfo, RestoreState
from coldvault.store.local import LocalStore
from coldvault.store.memory import MemoryStore
from coldvault.store.retry import RetryingStore
from coldvault.store.url import open_store
from coldvault.vault import thaw
from cvtools import run, vault_env
from mounttools import unmount

USAGE, COLD = 2, 14
HOUR = 3600.0


def test_ready_in_asks_the_store_then_the_tier_table(tmp_path):
    # A store that simulates its cold tier knows when its copies will be readable,
    # also behind the retry wrapper (nobody reaches for its attributes).
    local = LocalStore(str(tmp_path / "vault"), restore_delay=3.0)
    assert thaw.ready_in(local, ["DEEP_ARCHIVE"], "Bulk") == 3.0
    assert thaw.ready_in(RetryingStore(local), ["DEEP_ARCHIVE"], "Bulk") == 3.0
    assert thaw.ready_in(MemoryStore(restore_delay=0.0), ["GLACIER"], "Standard") == 0.0
    # A real cold tier: the typical time of the slowest class (no network is involved).
    s3 = open_store("s3://my-bucket/vault", endpoint_url="http://127.0.0.1:9")
    assert thaw.ready_in(s3, ["GLACIER", "DEEP_ARCHIVE"], "Bulk") == 48 * HOUR
    assert thaw.ready_in(s3, ["GLACIER"], "Expedited") == 5 * 60
    assert thaw.ready_in(s3, ["DEEP_ARCHIVE"], "Expedited") == 12 * HOUR  # Deep Archive: Standard instead
    assert thaw.ready_in(s3, ["STANDARD"], "Bulk") is None


def test_one_poll_policy(monkeypatch):
    monkeypatch.delenv(thaw.POLL_ENV, raising=False)
    assert thaw.first_poll() == 5.0
    first = [d for d, _ in zip(thaw.poll_intervals(5.0), range(14))]
    assert first[:3] == [5.0, 7.5, 11.25]
    assert all(b >= a for a, b in zip(first, first[1:])) and first[-1] == 300.0
    long = [d for d, _ in zip(thaw.poll_intervals(900.0), range(3))]
    assert long == [900.0] * 3  # a first wait longer than the ceiling stays as it is
    monkeypatch.setenv(thaw.POLL_ENV, "0.2")
    assert thaw.first_poll() == 0.2
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(thaw.POLL_ENV, bad)
        with pytest.raises(UserError, match=thaw.POLL_ENV):
            thaw.first_poll()


def test_cold_state_condition():
    def info(name, cls="DEEP_ARCHIVE", status="none"):
        return ObjectInfo(name, 10, cls, RestoreState(status))

    def condition(*infos):
        return thaw.ColdState({i.name: i for i in infos}).condition

    assert condition() == "hot"
    assert condition(info("a", "STANDARD")) == "hot"
    assert condition(info("a"), info("b", "STANDARD")) == "cold"
    assert condition(info("a", status="in-progress"), info("b")) == "restoring"
    assert condition(info("a", status="restored"), info("b", "GLACIER", "restored")) == "restored"
    assert condition(info("a", status="restored"), info("b")) == "cold"


def test_mount_refuses_a_bad_poll_setting(tmp_path):
    env = vault_env(str(tmp_path / "vault"), COLDVAULT_RESTORE_POLL="soon")
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = run(["mount", str(mnt), "--cold", "wait"], env, check=False, timeout=60)
    finally:
        unmount(str(mnt))
    assert r.code == USAGE, r.err
    assert "COLDVAULT_RESTORE_POLL" in r.err and "'soon'" in r.err and "Traceback" not in r.err
    assert not os.path.ismount(mnt)


@pytest.mark.zfs
def test_restore_zfs_wait_refuses_a_bad_poll_setting_before_asking(tmp_path):
    from zfstools import pool, sh

    with pool(tmp_path) as (name, root):
        ds = f"{name}/cold"
        sh("zfs", "create", ds)
        Path(root, "cold", "x.bin").write_bytes(os.urandom(300_000))
        sh("zfs", "snapshot", f"{ds}@s")
        repo = str(tmp_path / "vault")
        env = vault_env(repo, XDG_CACHE_HOME=str(tmp_path / "cache"))
        run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
        run(["backup", "zfs", f"{ds}@s"], env)

        bad = {**env, "COLDVAULT_RESTORE_POLL": "soon"}
        r = run(["restore", "zfs", f"{ds}@s", "--into", f"{name}/back", "--thaw", "--wait"], bad, check=False)
        assert r.code == USAGE and "COLDVAULT_RESTORE_POLL" in r.err and "Traceback" not in r.err, r.err
        # Refused before anything was asked or received: no restore request, no dataset.
        sidecars = [Path(d, f) for d, _, fs in os.walk(Path(repo, "data")) for f in fs if f.endswith(".cold")]
        assert sidecars and all(json.loads(p.read_text())["requested_at"] is None for p in sidecars)
        assert not Path(tmp_path, "cache").exists() or not any(Path(tmp_path, "cache").rglob("restores.json"))
        assert sh("zfs", "list", "-H", "-o", "name", "-r", name).decode().split() == [name, ds]

        # The same command with a good setting waits by the same policy and receives.
        good = {**env, "COLDVAULT_RESTORE_POLL": "0.2"}
        out = run(["restore", "zfs", f"{ds}@s", "--into", f"{name}/back", "--thaw", "--wait"], good).out
        assert "requested the restore of" in out and "received @s.zfs" in out
        status = run(["thaw", "--status", "--json"], env).json()["restores"]
        assert status and {x["requested_by"] for x in status} == {"restore"}


def test_status_estimate_for_a_real_cold_tier_comes_from_the_table(tmp_path, moto_endpoint):
    """On S3 (behind the retry wrapper) thaw prints the tier table's time, not a simulated one."""
    repo = f"s3://cv-{uuid.uuid4().hex[:12]}/photos"
    env = vault_env(repo, COLDVAULT_S3_ENDPOINT=moto_endpoint, XDG_CACHE_HOME=str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(os.urandom(200_000))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src), "--name", "photos"], env)
    text = run(["thaw", "latest", "--dry-run"], env).out
    assert "simulated cold tier" not in text
    r = run(["thaw", "latest", "--json"], env).json()
    assert r["typical_seconds"] == 48 * HOUR and r["ready_by"] is not None
