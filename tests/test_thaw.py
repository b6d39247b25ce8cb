"""`coldvault thaw`: the plan and its price, requests, --status, and every kind of TARGET.

The estimate is checked against a hand calculation from the price table in
docs/cold-storage.md, on a vault whose packs are counted and measured in the
store itself. Everything runs the `coldvault` command as a user would, on
local vaults (the simulated cold tier), a real mount, moto S3 and zfs-fuse.
"""

from __future__ import annotations

import calendar
import errno
import json
import os
import random
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from pytest import approx

from coldvault.vault import pricing
from cvtools import COLDVAULT, run, vault_env
from mounttools import mounted

USAGE, DAMAGED, COLD = 2, 13, 14
GB = 2**30  # AWS bills a GB as 2**30 bytes
DOC = Path(__file__).resolve().parent.parent / "docs" / "cold-storage.md"

# The price table of docs/cold-storage.md, section 2 (AWS us-east-1 list prices, USD).
# Restore: (per 1,000 requests, per GB)
DEEP_ARCHIVE_BULK = (0.025, 0.0025)
DEEP_ARCHIVE_STANDARD = (0.10, 0.02)
GLACIER_BULK = (0.0, 0.0)
GLACIER_STANDARD = (0.05, 0.01)
GLACIER_EXPEDITED = (10.0, 0.03)
STANDARD_PER_GB_MONTH = 0.023  # the restored copy, for --days days of a 30-day month


def env_for(tmp_path, repo=None, **extra) -> dict:
    return vault_env(repo or str(tmp_path / "vault"), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def data_packs(repo: str) -> dict[str, int]:
    """Every data pack in a local vault, straight from the directory: name -> size."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(repo, "data")):
        for f in files:
            if not f.endswith(".cold") and not f.startswith(".tmp-"):
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, repo).replace(os.sep, "/")] = os.path.getsize(p)
    return out


def requested(repo: str) -> set[str]:
    """Data packs of a local vault whose cold sidecar records a restore request."""
    out = set()
    for name in data_packs(repo):
        with open(os.path.join(repo, name + ".cold")) as f:
            if json.load(f)["requested_at"] is not None:
                out.add(name)
    return out


def cold_vault(tmp_path, env, cls="DEEP_ARCHIVE", sizes=(3_000_000, 2_000_000, 1_500_000)) -> tuple[str, Path]:
    """A vault with 1 MiB data packs in `cls` and one snapshot of known files; returns (id, source dir)."""
    rng = random.Random(5)
    src = tmp_path / "src"
    for i, n in enumerate(sizes):
        write(src / f"dir{i % 2}" / f"photo{i}.jpg", rng.randbytes(n))
    run(["init", "--data-storage-class", cls, "--pack-size", "1"], env)
    sid = run(["backup", "dir", str(src), "--name", "photos", "--json"], env).json()["snapshot"]
    return sid, src


def by_tier(result: dict) -> dict:
    return {e["tier"]: e for e in result["estimates"]}


# ---- the estimate ---------------------------------------------------------------------


def test_dry_run_estimate_equals_hand_calculation(tmp_path):
    env = env_for(tmp_path)
    sid, _ = cold_vault(tmp_path, env)
    repo = env["COLDVAULT_REPO"]
    packs = data_packs(repo)
    n, nbytes = len(packs), sum(packs.values())
    assert n >= 3  # 6.5 MB of incompressible data in packs of 1 MiB and a little more

    r = run(["thaw", sid[:8], "--dry-run", "--json", "--days", "10"], env).json()

    assert r["to_restore"]["requests"] == n
    assert r["to_restore"]["bytes"] == nbytes
    assert sorted(r["to_restore"]["names"]) == sorted(packs)
    assert r["to_restore"]["by_class"] == {"DEEP_ARCHIVE": {"packs": n, "bytes": nbytes}}
    assert r["restoring"]["packs"] == 0 and r["readable"]["packs"] == 0

    # By hand, from the documented table: n restore requests and nbytes / 2**30 GB restored,
    # the copies kept 10 days at the STANDARD rate (a month counted as 30 days).
    gb = nbytes / GB
    copy = gb * STANDARD_PER_GB_MONTH * 10 / 30
    bulk_requests = n / 1000 * DEEP_ARCHIVE_BULK[0]
    bulk_retrieval = gb * DEEP_ARCHIVE_BULK[1]
    standard_requests = n / 1000 * DEEP_ARCHIVE_STANDARD[0]
    standard_retrieval = gb * DEEP_ARCHIVE_STANDARD[1]

    est = by_tier(r)
    assert list(est) == ["Bulk", "Standard"]  # Deep Archive has no Expedited tier
    assert est["Bulk"]["request_cost"] == approx(bulk_requests, rel=1e-12)
    assert est["Bulk"]["retrieval_cost"] == approx(bulk_retrieval, rel=1e-12)
    assert est["Bulk"]["copy_cost"] == approx(copy, rel=1e-12)
    assert est["Bulk"]["total"] == approx(bulk_requests + bulk_retrieval + copy, rel=1e-12)
    assert est["Standard"]["request_cost"] == approx(standard_requests, rel=1e-12)
    assert est["Standard"]["retrieval_cost"] == approx(standard_retrieval, rel=1e-12)
    assert est["Standard"]["total"] == approx(standard_requests + standard_retrieval + copy, rel=1e-12)
    assert est["Bulk"]["chosen"] and not est["Standard"]["chosen"]
    assert est["Bulk"]["typical_seconds"] == 48 * 3600 and est["Standard"]["typical_seconds"] == 12 * 3600
    assert r["requested"] == [] and r["dry_run"]
    assert requested(repo) == set()  # a dry run asks for nothing

    text = run(["thaw", sid[:8], "--dry-run", "--tier", "Standard"], env).out
    assert f"-> {n} restore request(s)" in text
    assert re.search(r"^  \* Standard ", text, re.M) and re.search(r"^    Bulk ", text, re.M)
    assert "no Expedited" in text and "dry run: nothing was requested" in text
    assert requested(repo) == set()


def test_pricing_arithmetic_by_hand():
    # Ten 64 MiB packs from Deep Archive, copies kept 7 days:
    #   Bulk:     10/1000 * $0.025 = $0.00025;  0.625 GB * $0.0025 = $0.0015625
    #   Standard: 10/1000 * $0.10  = $0.001;    0.625 GB * $0.02   = $0.0125
    #   copy:     0.625 GB * $0.023 * 7/30 = $0.003354166...
    prices = pricing.load()
    by_class = {"DEEP_ARCHIVE": pricing.ClassTotals(10, 10 * 64 * 2**20)}
    bulk, standard = pricing.estimates(prices, by_class, 7)
    assert (bulk.request_cost, bulk.retrieval_cost) == (approx(0.00025), approx(0.0015625))
    assert (standard.request_cost, standard.retrieval_cost) == (approx(0.001), approx(0.0125))
    assert bulk.copy_cost == standard.copy_cost == approx(0.625 * 0.023 * 7 / 30)
    assert bulk.total == approx(0.00025 + 0.0015625 + 0.0033541666666)
    # Expedited asked of Deep Archive is Standard, at Standard's price.
    exp = pricing.estimate(prices, by_class, "Expedited", 7)
    assert exp.effective == {"DEEP_ARCHIVE": "Standard"} and exp.total == approx(standard.total)
    # Flexible Retrieval offers three tiers, Bulk retrieval is free.
    g = pricing.estimates(prices, {"GLACIER": pricing.ClassTotals(10, 10 * 64 * 2**20)}, 7)
    assert [e.tier for e in g] == ["Bulk", "Standard", "Expedited"]
    assert g[0].request_cost == g[0].retrieval_cost == 0
    assert g[2].request_cost == approx(0.1) and g[2].retrieval_cost == approx(0.625 * 0.03)


def test_documented_table_is_the_built_in_one():
    doc = DOC.read_text()
    rows = re.findall(r"^\| (GLACIER|DEEP_ARCHIVE) \| (Bulk|Standard|Expedited) \| \$([\d.]+) \| \$([\d.]+) \|$",
                      doc, re.M)
    table = {(c, t): (float(a), float(b)) for c, t, a, b in rows}
    assert table == {
        ("GLACIER", "Bulk"): GLACIER_BULK, ("GLACIER", "Standard"): GLACIER_STANDARD,
        ("GLACIER", "Expedited"): GLACIER_EXPEDITED,
        ("DEEP_ARCHIVE", "Bulk"): DEEP_ARCHIVE_BULK, ("DEEP_ARCHIVE", "Standard"): DEEP_ARCHIVE_STANDARD,
    }
    built_in = pricing.DEFAULT_PRICES["restore"]
    assert {(c, t): (p["per_1000_requests"], p["per_gb"]) for c, ts in built_in.items() for t, p in ts.items()} == table
    storage = dict(re.findall(r"^\| (STANDARD|GLACIER|DEEP_ARCHIVE) \| \$([\d.]+) \|", doc, re.M))
    assert {k: float(v) for k, v in storage.items()} == pricing.DEFAULT_PRICES["storage_per_gb_month"]
    assert STANDARD_PER_GB_MONTH == pricing.DEFAULT_PRICES["storage_per_gb_month"]["STANDARD"]


def test_worked_example_in_the_doc_adds_up():
    """docs/cold-storage.md section 4: 1 TiB of photos in Deep Archive, 64 MiB packs."""
    prices = pricing.load()
    doc = DOC.read_text()
    tib, packs = 2**40, 2**40 // (64 * 2**20)
    assert packs == 16_384 and "16,384" in doc
    assert f"${pricing.put_cost(prices, 'DEEP_ARCHIVE', packs):.2f}" == "$0.82"
    assert f"${pricing.monthly_storage_cost(prices, 'DEEP_ARCHIVE', tib, packs):.2f}" == "$1.02"
    bulk, standard = pricing.estimates(prices, {"DEEP_ARCHIVE": pricing.ClassTotals(packs, tib)}, 7)
    assert f"**${bulk.total:.2f}**" in doc and f"**${standard.total:.2f}**" in doc  # $8.47, $27.61
    for pack_mib, put, month, bulk_requests in ((1, "52.43", "1.23", "26.21"), (16, "3.28", "1.03", "1.64"),
                                                (512, "0.10", "1.01", "0.05")):
        n = tib // (pack_mib * 2**20)
        assert f"{pricing.put_cost(prices, 'DEEP_ARCHIVE', n):.2f}" == put
        assert f"{pricing.monthly_storage_cost(prices, 'DEEP_ARCHIVE', tib, n):.2f}" == month
        assert f"{n / 1000 * DEEP_ARCHIVE_BULK[0]:.2f}" == bulk_requests
        assert f"${put} | ${month} | ${bulk_requests} |" in doc


def test_glacier_vault_offers_three_tiers(tmp_path):
    env = env_for(tmp_path)
    sid, _ = cold_vault(tmp_path, env, cls="GLACIER", sizes=(2_500_000,))
    packs = data_packs(env["COLDVAULT_REPO"])
    n, gb = len(packs), sum(packs.values()) / GB
    r = run(["thaw", sid, "--dry-run", "--json", "--tier", "Expedited"], env).json()
    est = by_tier(r)
    assert list(est) == ["Bulk", "Standard", "Expedited"]
    copy = gb * STANDARD_PER_GB_MONTH * 7 / 30
    assert est["Bulk"]["total"] == approx(copy)  # Bulk retrieval from Flexible Retrieval is free
    assert est["Standard"]["total"] == approx(n / 1000 * GLACIER_STANDARD[0] + gb * GLACIER_STANDARD[1] + copy)
    assert est["Expedited"]["total"] == approx(n / 1000 * GLACIER_EXPEDITED[0] + gb * GLACIER_EXPEDITED[1] + copy)
    assert est["Expedited"]["chosen"] and est["Expedited"]["typical_seconds"] == 300
    text = run(["thaw", sid, "--dry-run", "--tier", "Expedited"], env).out
    assert re.search(r"^  \* Expedited ", text, re.M) and "no Expedited" not in text


def test_expedited_on_deep_archive_uses_standard(tmp_path):
    env = env_for(tmp_path)
    sid, _ = cold_vault(tmp_path, env, sizes=(1_500_000,))
    r = run(["thaw", sid, "--tier", "Expedited", "--json"], env).json()
    assert r["chosen_tier"] == "Standard" and by_tier(r)["Standard"]["chosen"]
    assert r["requested"]
    status = run(["thaw", "--status", "--json"], env).json()["restores"]
    assert {x["tier"] for x in status} == {"Standard"}


def test_price_override_file_and_environment(tmp_path):
    env = env_for(tmp_path)
    sid, _ = cold_vault(tmp_path, env, sizes=(2_000_000,))
    packs = data_packs(env["COLDVAULT_REPO"])
    n, gb = len(packs), sum(packs.values()) / GB
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({
        "basis": "a test's own prices",
        "restore": {"DEEP_ARCHIVE": {"Bulk": {"per_1000_requests": 1000.0, "per_gb": 2.0}}},
        "storage_per_gb_month": {"STANDARD": 3.0},
    }))
    r = run(["thaw", sid, "--dry-run", "--json", "--days", "30", "--prices", str(prices)], env).json()
    est = by_tier(r)
    assert est["Bulk"]["request_cost"] == approx(n * 1.0)  # $1000 per 1,000 requests
    assert est["Bulk"]["retrieval_cost"] == approx(gb * 2.0)
    assert est["Bulk"]["copy_cost"] == approx(gb * 3.0)  # 30 days = one month at $3
    # What the file does not name keeps the built-in price.
    assert est["Standard"]["retrieval_cost"] == approx(gb * DEEP_ARCHIVE_STANDARD[1])
    assert r["prices"] == {"basis": "a test's own prices", "currency": "USD", "source": str(prices)}

    via_env = run(["thaw", sid, "--dry-run", "--json", "--days", "30"], {**env, "COLDVAULT_PRICES": str(prices)}).json()
    assert by_tier(via_env) == est
    assert "a test's own prices" in run(["thaw", sid, "--dry-run", "--prices", str(prices)], env).out

    for bad, said in (({"restore": {"DEEP_ARCHIVE": {"Bulk": {"per_gb": -1, "per_1000_requests": 0}}}}, "per_gb"),
                      ({"restore": {"DEEP_ARCHIVE": {"Instant": {"per_gb": 1, "per_1000_requests": 0}}}}, "Instant"),
                      ({"storage": {}}, "unknown key")):
        prices.write_text(json.dumps(bad))
        r = run(["thaw", sid, "--dry-run", "--prices", str(prices)], env, check=False)
        assert r.code == USAGE and said in r.err and "Traceback" not in r.err
    prices.write_text("{not json")
    r = run(["thaw", sid, "--dry-run", "--prices", str(prices)], env, check=False)
    assert r.code == USAGE and "not valid JSON" in r.err


# ---- requests and --status ------------------------------------------------------------


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


# 45 s: the in-progress checks (five commands) must finish before it on a loaded 2-core machine;
# at 12 s they did not always.
@pytest.mark.parametrize("delay", [0, 45])
def test_thaw_then_status_until_ready(tmp_path, delay):
    env = env_for(tmp_path, COLDVAULT_LOCAL_RESTORE_DELAY=str(delay))
    sid, src = cold_vault(tmp_path, env)
    repo = env["COLDVAULT_REPO"]
    packs = data_packs(repo)
    before = time.time()

    r = run(["thaw", "latest", "--json"], env).json()
    assert sorted(r["requested"]) == sorted(packs)
    assert requested(repo) == set(packs)
    assert r["ready_by"] is not None

    status = run(["thaw", "--status", "--json"], env).json()
    rows = {x["pack"]: x for x in status["restores"]}
    assert set(rows) == set(packs)
    assert {x["requested_by"] for x in rows.values()} == {"thaw"}
    assert {(x["storage_class"], x["tier"]) for x in rows.values()} == {("DEEP_ARCHIVE", "Bulk")}
    if delay:
        assert {x["state"] for x in rows.values()} == {"in-progress"}
        r = run(["restore", "dir", sid, "--target", str(tmp_path / "early")], env, check=False)
        assert r.code == COLD and "being restored" in r.err
        assert all(x["expected_ready"] for x in rows.values())
        assert "in-progress (expected by" in run(["thaw", "--status"], env).out
        # Thawing again while they are being restored asks for nothing and costs nothing.
        again = run(["thaw", "latest", "--json"], env).json()
        assert again["requested"] == [] and again["to_restore"]["requests"] == 0
        assert again["restoring"]["packs"] == len(packs) and again["estimates"] == []
        assert "already being restored" in run(["thaw", "latest", "--dry-run"], env).out

    def all_ready():
        s = run(["thaw", "--status", "--json"], env).json()
        return s if {x["state"] for x in s["restores"]} == {"ready"} else None

    status = wait_for(all_ready, timeout=30.0 + delay, what="the restores to be ready")
    assert status["counts"]["ready"] == len(packs)
    for x in status["restores"]:
        expiry = calendar.timegm(time.strptime(x["expiry"], "%Y-%m-%dT%H:%M:%SZ"))
        assert before + 7 * 86400 - 2 <= expiry <= time.time() + delay + 7 * 86400 + 2
    text = run(["thaw", "--status"], env).out
    assert text.count("ready until") == len(packs) and f"{len(packs)} restore(s): {len(packs)} ready" in text

    # Twice: nothing new is asked for.
    again = run(["thaw", "latest", "--json"], env).json()
    assert again["requested"] == [] and again["readable"]["restored"] == len(packs)
    run(["restore", "dir", sid, "--target", str(tmp_path / "back")], env)
    assert (tmp_path / "back" / "dir0" / "photo0.jpg").read_bytes() == (src / "dir0" / "photo0.jpg").read_bytes()


def test_snapshot_path_thaws_only_the_packs_of_that_file(tmp_path):
    env = env_for(tmp_path)
    repo = env["COLDVAULT_REPO"]
    src = tmp_path / "src"
    write(src / "old.jpg", os.urandom(2_500_000))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE", "--pack-size", "1"], env)
    run(["backup", "dir", str(src), "--name", "photos"], env)
    first = set(data_packs(repo))
    write(src / "new" / "sub" / "new.jpg", os.urandom(2_500_000))
    sid = run(["backup", "dir", str(src), "--name", "photos", "--json"], env).json()["snapshot"]
    new = set(data_packs(repo)) - first  # the second run wrote only new.jpg's chunks
    assert new and first

    r = run(["thaw", f"{sid[:8]}:new/sub/new.jpg", "--dry-run", "--json"], env).json()
    assert set(r["to_restore"]["names"]) == new
    assert run(["thaw", f"{sid}:/new/", "--dry-run", "--json"], env).json()["to_restore"]["names"] == sorted(new)
    assert set(run(["thaw", f"{sid}:old.jpg", "--dry-run", "--json"], env).json()["to_restore"]["names"]) == first

    r = run(["thaw", f"{sid[:8]}:new/sub/new.jpg", "--json"], env).json()
    assert set(r["requested"]) == new and requested(repo) == new
    run(["restore", "dir", sid, "new/sub/new.jpg", "--target", str(tmp_path / "one")], env)
    assert (tmp_path / "one" / "new.jpg").read_bytes() == (src / "new" / "sub" / "new.jpg").read_bytes()
    r = run(["restore", "dir", sid, "old.jpg", "--target", str(tmp_path / "two")], env, check=False)
    assert r.code == COLD
    # The whole snapshot now: the thawed packs are counted apart, only the others are asked for.
    r = run(["thaw", sid, "--json"], env).json()
    assert r["readable"]["restored"] == len(new) and set(r["requested"]) == first

    r = run(["thaw", f"{sid}:no/such/file", "--dry-run"], env, check=False)
    assert r.code == USAGE and "no no in snapshot" in r.err


def test_restore_dir_hint_is_a_working_thaw_command(tmp_path):
    env = env_for(tmp_path)
    sid, src = cold_vault(tmp_path, env, sizes=(1_500_000, 1_200_000))
    r = run(["restore", "dir", "latest", "dir1", "--target", str(tmp_path / "t")], env, check=False)
    assert r.code == COLD
    hint = re.search(r"'coldvault (thaw [^']+)'", r.err)
    assert hint, r.err
    run(hint.group(1).split(), env)
    run(["restore", "dir", "latest", "dir1", "--target", str(tmp_path / "t")], env)
    assert (tmp_path / "t" / "photo1.jpg").read_bytes() == (src / "dir1" / "photo1.jpg").read_bytes()


def test_bad_targets_and_options(tmp_path):
    env = env_for(tmp_path)
    cold_vault(tmp_path, env, sizes=(300_000,))
    for args, said in ((["thaw"], "name what to thaw"),
                       (["thaw", "not-a-target"], "cannot tell"),
                       (["thaw", "ffffffff"], "no snapshot"),
                       (["thaw", str(tmp_path / "src" / "dir0")], "not inside a coldvault mount"),
                       (["thaw", "tank/none@x"], "no ZFS streams"),
                       (["thaw", "latest", "--days", "0"], "--days"),
                       (["thaw", "latest", "--all"], "--all goes with --status"),
                       (["thaw", "--status", "latest"], "takes no TARGET")):
        r = run(args, env, check=False)
        assert r.code == USAGE and said in r.err and "Traceback" not in r.err, (args, r.err)
    r = run(["thaw", "--status"], env)
    assert "no restores" in r.out


# ---- TARGETs inside a mount -------------------------------------------------------------


def test_paths_inside_a_mount(tmp_path):
    # Restores never finish here: the mount's own request stays in progress.
    env = env_for(tmp_path, COLDVAULT_LOCAL_RESTORE_DELAY="3600")
    repo = env["COLDVAULT_REPO"]
    src = tmp_path / "src"
    write(src / "a.jpg", os.urandom(2_200_000))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE", "--pack-size", "1"], env)
    run(["backup", "dir", str(src), "--name", "photos", "--time", "2024-05-01T03:00:00Z"], env)
    packs_a = set(data_packs(repo))
    write(src / "sub" / "b.jpg", os.urandom(2_200_000))
    run(["backup", "dir", str(src), "--name", "photos", "--time", "2024-05-02T03:00:00Z"], env)
    packs_b = set(data_packs(repo)) - packs_a

    def names(path):
        return set(run(["thaw", str(path), "--dry-run", "--json"], env).json()["to_restore"]["names"])

    with mounted(env, tmp_path / "my mount") as m:  # /proc/mounts escapes the space
        photos = Path(m.path) / "files" / "photos"
        assert names(photos / "snapshots" / "2024-05-02T03:00:00Z" / "sub" / "b.jpg") == packs_b
        assert names(photos / "snapshots" / "2024-05-02T03:00:00Z") == packs_a | packs_b
        assert names(photos / "snapshots" / "2024-05-01T03:00:00Z") == packs_a
        assert names(photos / "dates" / "2024-05-01" / "a.jpg") == packs_a
        assert names(photos / "dates" / "2024-05-02" / "sub") == packs_b
        assert names(photos / "latest" / "a.jpg") == packs_a  # unchanged: the same chunks
        assert names(photos / "changes" / "2024-05-02") == packs_b  # only b.jpg changed that day
        assert names(photos / "changes" / "2024-05-02" / "sub" / "b.jpg") == packs_b
        assert names(photos / "changes" / "2024-05-01") == packs_a
        # A relative path, from inside the mount.
        p = subprocess.run([*COLDVAULT, "thaw", "b.jpg", "--dry-run", "--json"], cwd=photos / "latest" / "sub",
                           env={**os.environ, **env}, capture_output=True, check=True)
        assert set(json.loads(p.stdout)["to_restore"]["names"]) == packs_b
        r = run(["thaw", str(photos / "latest" / "sub" / "b.jpg"), "--dry-run"], env).out
        assert "sub/b.jpg in snapshot" in r and f"-> {len(packs_b)} restore request(s)" in r
        for bad, said in ((photos, "whole sources"), (photos.parent / "other" / "latest", "no source"),
                          (photos / "snapshots" / "1999-01-01T00:00:00Z", "no 1999"),
                          (photos / "latest" / "nope.jpg", "nope.jpg"), (Path(m.path), "whole mount")):
            r = run(["thaw", str(bad), "--dry-run"], env, check=False)
            assert r.code == USAGE and said in r.err, (bad, r.err)

        # Reading cold data through the mount asks for its packs, and --status shows who asked.
        fd = os.open(photos / "latest" / "a.jpg", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                os.read(fd, 4096)  # raw read(2): Python's buffered I/O would turn EAGAIN into None
        finally:
            os.close(fd)
        assert e.value.errno == errno.EAGAIN
        status = run(["thaw", "--status", "--json"], env).json()["restores"]
        assert {x["pack"] for x in status} == packs_a
        assert {(x["requested_by"], x["state"]) for x in status} == {("mount", "in-progress")}
        # thaw counts them as being restored, and asks only for the others.
        r = run(["thaw", str(photos / "latest"), "--json"], env).json()
        assert r["restoring"]["packs"] == len(packs_a) and set(r["requested"]) == packs_b
        assert requested(repo) == packs_a | packs_b


# ---- S3 (moto) ------------------------------------------------------------------------------


def test_deep_archive_on_s3(tmp_path, moto_endpoint):
    import boto3

    bucket = f"cv-{uuid.uuid4().hex[:12]}"
    env = env_for(tmp_path, f"s3://{bucket}/photos", COLDVAULT_S3_ENDPOINT=moto_endpoint)
    sid, src = cold_vault(tmp_path, env)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="photos/data/")["Contents"]
    assert {o["StorageClass"] for o in listing} == {"DEEP_ARCHIVE"}
    packs = {o["Key"][len("photos/"):]: o["Size"] for o in listing}
    n, nbytes = len(packs), sum(packs.values())

    r = run(["thaw", sid, "--dry-run", "--json"], env).json()
    assert (r["to_restore"]["requests"], r["to_restore"]["bytes"]) == (n, nbytes)
    gb = nbytes / GB
    assert by_tier(r)["Bulk"]["total"] == approx(
        n / 1000 * DEEP_ARCHIVE_BULK[0] + gb * DEEP_ARCHIVE_BULK[1] + gb * STANDARD_PER_GB_MONTH * 7 / 30)
    assert run(["thaw", "--status", "--all", "--json"], env).json()["restores"] == []

    r = run(["thaw", sid, "--tier", "Standard", "--days", "2", "--json"], env).json()
    assert sorted(r["requested"]) == sorted(packs)
    # moto finishes a restore at once.
    status = run(["thaw", "--status", "--json"], env).json()
    assert {x["pack"] for x in status["restores"]} == set(packs)
    assert {(x["state"], x["tier"]) for x in status["restores"]} == {("ready", "Standard")}
    assert all(x["expiry"] for x in status["restores"])
    again = run(["thaw", sid, "--json"], env).json()
    assert again["requested"] == [] and again["readable"]["restored"] == n

    # Another machine (no restore log) sees them with --all.
    other = {**env, "XDG_CACHE_HOME": str(tmp_path / "other-cache")}
    assert run(["thaw", "--status", "--json"], other).json()["restores"] == []
    seen = run(["thaw", "--status", "--all", "--json"], other).json()
    assert {x["pack"] for x in seen["restores"]} == set(packs)
    assert {x["state"] for x in seen["restores"]} == {"ready"}
    run(["restore", "dir", sid, "--target", str(tmp_path / "back")], env)
    assert (tmp_path / "back" / "dir0" / "photo0.jpg").read_bytes() == (src / "dir0" / "photo0.jpg").read_bytes()


# ---- ZFS streams -----------------------------------------------------------------------------


@pytest.mark.zfs
def test_zfs_chain_targets(tmp_path):
    from zfstools import pool, sh

    with pool(tmp_path) as (name, root):
        ds = f"{name}/photos"
        sh("zfs", "create", ds)
        env = env_for(tmp_path, COLDVAULT_RESTORE_POLL="0.2")
        repo = env["COLDVAULT_REPO"]
        run(["init", "--data-storage-class", "DEEP_ARCHIVE", "--pack-size", "1"], env)
        write(Path(root) / "photos" / "a.bin", os.urandom(1_500_000))
        sh("zfs", "snapshot", f"{ds}@a")
        id_a = run(["backup", "zfs", f"{ds}@a", "--json"], env).json()["snapshot"]
        packs_a = set(data_packs(repo))
        write(Path(root) / "photos" / "b.bin", os.urandom(1_500_000))
        sh("zfs", "snapshot", f"{ds}@b")
        id_b = run(["backup", "zfs", f"{ds}@b", "--json"], env).json()["snapshot"]
        packs_b = set(data_packs(repo)) - packs_a

        def names(target):
            return set(run(["thaw", target, "--dry-run", "--json"], env).json()["to_restore"]["names"])

        assert names(f"{ds}@b") == packs_a | packs_b  # the chain: @a.zfs, then @a..@b.zfs
        assert names(f"{ds}@a") == packs_a
        assert names(id_b[:8]) == packs_a | packs_b  # a stream's record: it and the chain to its base
        assert names(id_a[:8]) == packs_a
        with mounted(env, tmp_path / "mnt") as m:
            zdir = Path(m.path) / "zfs" / name / "photos"
            assert names(str(zdir / "@b.restore")) == packs_a | packs_b
            assert names(str(zdir / "@b.restore" / "0002-@a..@b.zfs")) == packs_a | packs_b
            assert names(str(zdir / "@a..@b.zfs")) == packs_a | packs_b
            assert names(str(zdir / "@a.zfs")) == packs_a
            r = run(["thaw", str(zdir), "--dry-run"], env, check=False)
            assert r.code == USAGE and "dataset directory" in r.err
        text = run(["thaw", f"{ds}@b", "--dry-run"], env).out
        assert "ZFS chain of 2 stream(s)" in text and "@a.zfs, @a..@b.zfs" in text

        # restore zfs --thaw logs its requests for --status too.
        run(["restore", "zfs", f"{ds}@b", "--into", f"{name}/back", "--thaw", "--wait"], env)
        status = run(["thaw", "--status", "--json"], env).json()["restores"]
        assert {x["pack"] for x in status} == packs_a | packs_b
        assert {x["requested_by"] for x in status} == {"restore"}


def test_status_says_expired_and_missing(tmp_path, monkeypatch):
    from coldvault.store.local import LocalStore
    from coldvault.vault import thaw
    from coldvault.vault.vault import Vault

    env = env_for(tmp_path)
    cold_vault(tmp_path, env, sizes=(300_000,))
    (pack,) = data_packs(env["COLDVAULT_REPO"])
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    vault = Vault.open(LocalStore(env["COLDVAULT_REPO"]), lambda: env["COLDVAULT_PASSWORD"].encode())
    now = time.time()
    long_ago = now - 10 * 86400
    thaw.record_requests(vault, [
        # Asked 10 days ago for 7 days: the copy is gone (the store says: not restored).
        thaw.LoggedRestore(pack, "DEEP_ARCHIVE", "Bulk", 7, long_ago, 300_000, "thaw"),
        # A pack removed from the vault since.
        thaw.LoggedRestore("data/00/" + "0" * 32, "DEEP_ARCHIVE", "Standard", 7, long_ago, 1, "mount"),
        # Expired long ago: dropped from the log.
        thaw.LoggedRestore("data/11/" + "1" * 32, "DEEP_ARCHIVE", "Bulk", 1, now - 100 * 86400, 1, "thaw"),
    ])
    logged = json.loads(Path(thaw.restore_log_path(vault)).read_text())
    assert len(logged["restores"]) == 2 and logged["vault"] == vault.config.vault_id.hex()
    status = run(["thaw", "--status", "--json"], env).json()
    assert {x["pack"]: x["state"] for x in status["restores"]} == {pack: "expired", "data/00/" + "0" * 32: "missing"}
    text = run(["thaw", "--status"], env).out
    assert "expired" in text and "missing from the store" in text
    # A damaged log is only a cache: it is set aside with a warning, never an error.
    Path(thaw.restore_log_path(vault)).write_text("{broken")
    r = run(["thaw", "--status"], env)
    assert "no restores" in r.out and "ignoring unreadable restore log" in r.err
    run(["thaw", "latest"], env)
    assert [x["pack"] for x in run(["thaw", "--status", "--json"], env).json()["restores"]] == [pack]
