"""A real moto S3 server on 127.0.0.1, as a subprocess, for tests that talk HTTP.

    with run_moto_server() as endpoint:      # "http://127.0.0.1:<port>"
        S3Store("bucket", endpoint_url=endpoint)

tests/conftest.py wraps this in the session fixture `moto_endpoint`, which also
puts dummy AWS credentials in the environment. moto emulates the cold tiers:
a GET of a GLACIER or DEEP_ARCHIVE object fails with InvalidObjectState until
RestoreObject, and by default a restore completes at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator

# Dummy credentials: moto accepts anything, and real ones must never be used by tests.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that could point boto3 at a real account or profile.
UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")

STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aws_test_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) with dummy credentials and no AWS profile."""
    env = dict(os.environ if base is None else base)
    for var in UNSET_AWS_ENV:
        env.pop(var, None)
    env.update(DUMMY_AWS_ENV)
    return env


def answers(url: str) -> bool:
    """The server at `url` takes HTTP requests (an unsigned one refused is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


@contextlib.contextmanager
def run_moto_server() -> Iterator[str]:
    """Start `python -m moto.server` on a free port, yield its endpoint URL, then kill it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=aws_test_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not answers(endpoint + "/moto-api/"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    tail = output.read()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"moto server did not start on {endpoint}:\n{tail}")
                time.sleep(0.05)
            yield endpoint
        finally:
            proc.kill()
            proc.wait(timeout=10)

