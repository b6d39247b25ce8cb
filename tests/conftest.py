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
