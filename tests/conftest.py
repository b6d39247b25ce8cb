"""Shared test fixtures.

tests/ is not a package: its own directory goes on sys.path here so that any
test file can ``import moto_server``.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import moto_server  # noqa: E402
import rclone_server  # noqa: E402


@pytest.fixture(autouse=True)
def _index_cache_dir(tmp_path_factory, monkeypatch):
    """Each test's local caches in directories of its own, not ~/.cache: the index caches
    (vault/indexcache.py), and the restore logs and mount chunk caches under XDG_CACHE_HOME
    (a test that sets either in a command's environment wins)."""
    monkeypatch.setenv("COLDVAULT_CACHE_DIR", str(tmp_path_factory.mktemp("index-cache")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def moto_endpoint():
    """URL of one moto S3 server for the whole session, with dummy AWS credentials set.

    Tests share the server: each should use its own bucket.
    """
    with pytest.MonkeyPatch.context() as mp:
        for var in moto_server.UNSET_AWS_ENV:
            mp.delenv(var, raising=False)
        for var, value in moto_server.DUMMY_AWS_ENV.items():
            mp.setenv(var, value)
        with moto_server.run_moto_server() as endpoint:
            yield endpoint


@pytest.fixture(scope="session")
def rclone_endpoint():
    """URL of one `rclone serve s3` server for the whole session (tests/rclone_server.py), with
    the same dummy AWS credentials as moto set. The bucket rclone_server.BUCKET exists.

    Tests share the server: each should use its own bucket or prefix.
    """
    with pytest.MonkeyPatch.context() as mp:
        for var in moto_server.UNSET_AWS_ENV:
            mp.delenv(var, raising=False)
        for var, value in moto_server.DUMMY_AWS_ENV.items():
            mp.setenv(var, value)
        with rclone_server.run_rclone_server() as endpoint:
            yield endpoint


# Pools left behind that pytest-xdist workers reported (pytest_testnodedown), for the
# controller's check in pytest_sessionfinish.
_WORKER_LEAKS: list[str] = []


def _leaked_pools() -> list[str]:
    """Lines about the ZFS pools this process's tests made and did not destroy (one more
    destroy is tried); empty when there are none."""
    zfstools = sys.modules.get("zfstools")
    if zfstools is None:
        return []  # no test made a pool
    left = zfstools.leftover_pools()
    if not left:
        return []
    still = [n for n in left if zfstools.destroy_leftover(n) is not None]
    return [f"ZFS pools made by this test session were left behind: {', '.join(left)}",
            ("destroyed now" if not still else f"STILL THERE: {', '.join(still)} (zpool destroy -f NAME)")]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """An xdist worker finished: keep what it found left behind (see pytest_sessionfinish)."""
    _WORKER_LEAKS.extend(getattr(node, "workeroutput", {}).get("leaked_pools", []))


def pytest_sessionfinish(session, exitstatus):
    """Fail the session, loudly, if a ZFS pool made by one of its tests is still there.

    tests/zfstools.py `pool()` destroys each pool even when its test fails; a pool left
    behind means that went wrong (or the test was killed). One more destroy is tried, and
    the session fails either way, so a leak is never silent. Under pytest-xdist each worker
    checks its own pools and hands the lines to the controller, which reports them: a
    worker's exit status does not reach the controller's."""
    lines = _leaked_pools()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["leaked_pools"] = lines
        return
    lines += _WORKER_LEAKS
    if not lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "ZFS POOLS LEFT BEHIND: the session fails", red=True, bold=True)
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True, bold=True)
        else:
            print(line, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
