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


@pytest.fixture(autouse=True)
def _index_cache_dir(tmp_path_factory, monkeypatch):
    """Each test's local index caches (vault/indexcache.py) in a directory of its own, not ~/.cache."""
    monkeypatch.setenv("COLDVAULT_CACHE_DIR", str(tmp_path_factory.mktemp("index-cache")))


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


def pytest_sessionfinish(session, exitstatus):
    """Fail the session, loudly, if a ZFS pool made by one of its tests is still there.

    tests/zfstools.py `pool()` destroys each pool even when its test fails; a pool left
    behind means that went wrong (or the test was killed). One more destroy is tried, and
    the session fails either way, so a leak is never silent."""
    zfstools = sys.modules.get("zfstools")
    if zfstools is None:
        return  # no test made a pool
    left = zfstools.leftover_pools()
    if not left:
        return
    still = [n for n in left if zfstools.destroy_leftover(n) is not None]
    lines = [f"ZFS pools made by this test session were left behind: {', '.join(left)}",
             ("destroyed now" if not still else f"STILL THERE: {', '.join(still)} (zpool destroy -f NAME)")]
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
