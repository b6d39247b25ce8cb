"""S3 and S3-compatible services (AWS, MinIO, Ceph, B2, Wasabi, moto) as a store.

One boto3 client per store, created once and shared by every thread (boto3
clients are thread-safe; sessions are not, so the store owns its session).
botocore's own retries are turned off: `RetryingStore` does the retrying, with
backoff and logging, for every store alike.

Every failure of the transport, at any point of a request (connecting, sending,
waiting for the headers, reading the body), is a TransientError. Most reach us
from botocore as BotoCoreError; whatever escapes as a urllib3, http.client or
socket exception is caught too. A GET body shorter than its Content-Length or
than the range asked for is also a TransientError: the connection lost it, and
reading again gets it whole.

Object ``name`` lives at key ``prefix + name``. Every botocore failure is
translated here into the errors of `coldvault.store.base`; nothing above this
module sees a ClientError. Messages name the bucket, the object and the
endpoint, never credentials.

Cold objects: a GET of a GLACIER or DEEP_ARCHIVE object without a restored
copy fails with InvalidObjectState, which becomes ArchivedError (or
RestoreInProgressError if a HEAD shows a restore running). HEAD reports the
restore state from the ``x-amz-restore`` header::

    ongoing-request="true"                                             in progress
    ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"  restored

Endpoints without a cold tier: some S3-compatible servers (rclone serve s3, tested
beside moto) accept a StorageClass, keep nothing of it (rclone echoes it back on HEAD
from memory) and do not implement RestoreObject. The first time this store writes a
cold class it asks the endpoint once (RestoreObject on a key nobody writes:
NoSuchKey where there is a cold tier, "not implemented" where there is none). Without
one, cold classes are written as STANDARD with one warning, reported as STANDARD, and
`capabilities().cold_tier` is False. A restore request refused as not implemented
(of an object another client wrote "cold") asks the same question, and the object
is readable as it is. docs/cold-storage.md, "S3-compatible servers".

Checksums: botocore checks the CRC of a whole-object GET, asked for with ChecksumMode,
and no other: a ranged GET reads part of an object, and a checksum of the whole one
(rclone sends it) says nothing about the part.

Over 400 lines on purpose: the translation of every botocore failure into the
store's errors is the bulk of it, and it must stay next to the calls it guards
(one edge, nothing above it sees a ClientError).
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import re
import threading
import urllib.parse

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import urllib3.exceptions

from coldvault.store.base import (
    HOT_CLASS,
    RESTORE_TIERS,
    ArchivedError,
    Capabilities,
    NotFoundError,
    ObjectInfo,
    PermissionDeniedError,
    RestoreInProgressError,
    RestoreState,
    Store,
    StoreError,
    TransientError,
    is_cold_class,
)

log = logging.getLogger(__name__)

# Error codes (the <Code> of an S3 error body, or the bare HTTP status of a
# HEAD, which has no body) grouped by what the caller can do about them.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PERMISSION_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",  # a conflicting bucket operation is in progress
        "429",
    }
)

# The answer of an endpoint that does not implement a request at all: rclone serve s3
# says MethodNotAllowed (HTTP 400) to RestoreObject, other servers NotImplemented (501).
_UNSUPPORTED_CODES = frozenset({"NotImplemented", "MethodNotAllowed", "501", "405"})

# A key nobody writes: RestoreObject on it asks the endpoint whether it has a cold tier.
_COLD_TIER_PROBE = "coldvault-probe/cold-tier"

# Failures of the connection rather than of the request: worth retrying.
_CONNECTION_ERRORS = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
    botocore.exceptions.HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
    botocore.exceptions.IncompleteReadError,
)
_CONNECTION_PROBLEMS = {
    botocore.exceptions.EndpointConnectionError: "cannot connect to {}",
    botocore.exceptions.ConnectTimeoutError: "connecting to {} timed out",
    botocore.exceptions.ReadTimeoutError: "{} did not answer in time",
    botocore.exceptions.ConnectionClosedError: "{} closed the connection",
    botocore.exceptions.ResponseStreamingError: "the answer from {} broke off",
    botocore.exceptions.IncompleteReadError: "the answer from {} was cut short",
}

# Transport failures that botocore does not wrap in a BotoCoreError: urllib3's
# ProtocolError and ReadTimeoutError from a streaming body read outside
# botocore's wrapper, http.client and socket errors, and the parse error of an
# XML answer cut short. Each is a failure of the connection, not of the request.
_RAW_TRANSPORT_ERRORS = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    botocore.parsers.ResponseParserError,
)
_RAW_PROBLEMS = {
    urllib3.exceptions.ReadTimeoutError: "{} did not answer in time",
    TimeoutError: "{} did not answer in time",
    botocore.parsers.ResponseParserError: "the answer from {} was cut short or garbled",
}

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")

_RESTORE_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)
_RESTORE_EXPIRY = re.compile(r'expiry-date\s*=\s*"([^"]*)"', re.IGNORECASE)


def parse_restore_header(value: str | None) -> RestoreState:
    """RestoreState from the ``x-amz-restore`` header (``Restore`` in boto3); None: not requested."""
    if not value:
        return RestoreState()
    ongoing = _RESTORE_ONGOING.search(value)
    if ongoing is None:
        return RestoreState()
    if ongoing.group(1).lower() == "true":
        return RestoreState("in-progress")
    expiry = None
    match = _RESTORE_EXPIRY.search(value)
    if match:
        try:
            expiry = email.utils.parsedate_to_datetime(match.group(1)).timestamp()
        except (TypeError, ValueError):
            expiry = None
    return RestoreState("restored", expiry)


def _redact_endpoint(url: str) -> str:
    """The endpoint URL without any user:password@ part, fit for a message."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return str(error.get("Code") or status), int(status)


class S3Store(Store):
    """Objects under ``prefix`` in one bucket of an S3-compatible service.

    `prefix` is used as a folder: a trailing '/' is added when missing.
    `endpoint_url` selects a non-AWS service (path-style addressing is then
    used, as MinIO, Ceph and moto expect); `region` defaults to the AWS chain.
    `max_pool` sizes the HTTP connection pool, and `capabilities().connections`
    says it: the stack's limit (store.limit) and the callers' pools are sized by it.
    `capabilities().cold_tier` is False once the endpoint has shown it has no cold
    tier (module docstring). `read_timeout` is how long S3 may stay silent in the middle
    of an answer. `client_attempts` is botocore's own total attempts per call:
    1, no retry, because `RetryingStore` retries on top (one retry layer, one
    backoff, one log).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        max_pool: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        client_attempts: int = 1,
    ):
        if not bucket:
            raise StoreError("an S3 store needs a bucket name")
        prefix = prefix.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self.max_pool = max_pool
        options = {}
        if "response_checksum_validation" in botocore.config.Config.OPTION_DEFAULTS:  # botocore >= 1.36
            options["response_checksum_validation"] = "when_required"  # whole-object GETs ask (get)
        config = botocore.config.Config(
            max_pool_connections=max_pool,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max(1, client_attempts), "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None,
            **options,
        )
        session = boto3.session.Session()
        self._client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.endpoint = _redact_endpoint(endpoint_url or self._client.meta.endpoint_url)
        self.url = f"s3://{bucket}/{prefix}"
        self._bucket_seen = False  # a HEAD once found the bucket (see head)
        self._cold_tier: bool | None = None  # None: not asked yet (see _has_cold_tier)
        self._cold_tier_lock = threading.Lock()
        self._warned_classes: set[str] = set()

    # --- translation at the edge -----------------------------------------------------

    def _subject(self, name: str | None, endpoint: bool = True) -> str:
        """'object N in bucket B at E', or 'bucket B at E' for bucket-level calls."""
        subject = f"object {name} in bucket {self.bucket}" if name else f"bucket {self.bucket}"
        return f"{subject} at {self.endpoint}" if endpoint else subject

    def _translate(self, exc: Exception, name: str | None, action: str) -> StoreError:
        """A coldvault StoreError for a botocore failure while `action` (e.g. "reading") `name`."""
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status = _error_code(exc)
            if code == "NoSuchBucket":
                return NotFoundError(
                    f"bucket {self.bucket} does not exist at {self.endpoint}",
                    name,
                    hint="check the vault URL, or create the vault with 'coldvault init'",
                )
            if code in _NOT_FOUND_CODES:
                return NotFoundError(f"{self._subject(name)} does not exist", name)
            if code in _PERMISSION_CODES:
                return PermissionDeniedError(
                    f"{action} {self._subject(name)} was denied ({code})",
                    name,
                    hint="check the AWS credentials and the bucket policy",
                )
            if code in _UNSUPPORTED_CODES:  # before the 5xx rule: asking again will not help
                return StoreError(
                    f"{action} {self._subject(name)} failed: {self.endpoint} does not implement "
                    f"this request ({code}, HTTP {status})",
                    name,
                )
            if code in _TRANSIENT_CODES or status >= 500:
                return TransientError(f"{action} {self._subject(name)} failed: {code} (HTTP {status})", name)
            detail = exc.response.get("Error", {}).get("Message")
            detail = f"{code}: {detail}" if detail else code
            return StoreError(f"{action} {self._subject(name)} failed: {detail} (HTTP {status})", name)
        if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
            return PermissionDeniedError(
                f"no usable AWS credentials for {self.endpoint}",
                name,
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            )
        if isinstance(exc, botocore.exceptions.CredentialRetrievalError):
            return TransientError(f"cannot fetch AWS credentials for {self.endpoint}", name)
        if isinstance(exc, botocore.exceptions.SSLError):
            # A bad certificate does not heal by retrying.
            return StoreError(
                f"{action} {self._subject(name, False)} failed: TLS to {self.endpoint} failed",
                name,
                hint="check the endpoint URL and its certificate",
            )
        if isinstance(exc, _CONNECTION_ERRORS):
            problem = _CONNECTION_PROBLEMS.get(type(exc), "the connection to {} failed").format(self.endpoint)
            return TransientError(
                f"{action} {self._subject(name, False)} failed: {problem} ({type(exc).__name__})", name
            )
        if isinstance(exc, _RAW_TRANSPORT_ERRORS):
            problem = next((p for t, p in _RAW_PROBLEMS.items() if isinstance(exc, t)), "the answer from {} broke off")
            return TransientError(
                f"{action} {self._subject(name, False)} failed: {problem.format(self.endpoint)} ({type(exc).__name__})",
                name,
            )
        return StoreError(f"{action} {self._subject(name)} failed: {type(exc).__name__}", name)

    @contextlib.contextmanager
    def _errors(self, action: str, name: str | None = None):
        """Translate any botocore or transport failure inside the block; StoreErrors pass through."""
        try:
            yield
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, *_RAW_TRANSPORT_ERRORS) as exc:
            raise self._translate(exc, name, action) from exc

    def _key(self, name: str) -> str:
        return self.prefix + name

    # --- endpoints without a cold tier ------------------------------------------------

    def _has_cold_tier(self) -> bool:
        """Whether the endpoint keeps cold classes cold; asked of it once, when first needed."""
        if self._cold_tier is None:
            with self._cold_tier_lock:
                if self._cold_tier is None:
                    self._cold_tier = self._probe_cold_tier()
        return self._cold_tier

    def _probe_cold_tier(self) -> bool:
        """RestoreObject on a key nobody writes: S3 answers NoSuchKey, a server without a
        cold tier that it does not implement the request. Any other refusal (AccessDenied
        for credentials without s3:RestoreObject, ...) leaves S3's rules in force."""
        request = {"Days": 1, "GlacierJobParameters": {"Tier": "Bulk"}}
        with self._errors("checking the cold tier of"):
            try:
                self._client.restore_object(
                    Bucket=self.bucket, Key=self._key(_COLD_TIER_PROBE), RestoreRequest=request
                )
            except botocore.exceptions.ClientError as exc:
                code, status = _error_code(exc)
                if code in _UNSUPPORTED_CODES:
                    return False
                if code == "NoSuchBucket" or code in _TRANSIENT_CODES or status >= 500:
                    raise
        return True

    def _reported_class(self, storage_class: str | None) -> str:
        """The class an object is really in: a server without a cold tier may echo the
        class it was sent (rclone serve s3 does, from memory) while keeping it hot. Not
        asked here (reads of a cold vault cost no extra request): the first restore
        request, refused as not implemented, tells."""
        storage_class = storage_class or HOT_CLASS
        if is_cold_class(storage_class) and self._cold_tier is False:
            return HOT_CLASS
        return storage_class

    def _written_class(self, storage_class: str | None) -> str | None:
        """The class to ask the endpoint for: a cold one only where there is a cold tier."""
        if not is_cold_class(storage_class) or self._has_cold_tier():
            return storage_class
        with self._cold_tier_lock:
            if storage_class in self._warned_classes:
                return None
            self._warned_classes.add(storage_class)
        log.warning(
            "%s has no cold tier (it does not implement RestoreObject): objects asked for in %s "
            "are stored as STANDARD in bucket %s",
            self.endpoint, storage_class, self.bucket,
        )
        return None

    # --- the Store interface ------------------------------------------------------------

    def put(self, name, data, storage_class=None):
        kwargs = {"Bucket": self.bucket, "Key": self._key(name), "Body": bytes(data)}
        with self._errors("writing", name):
            storage_class = self._written_class(storage_class)
            if storage_class:
                kwargs["StorageClass"] = storage_class
            self._client.put_object(**kwargs)

    def get(self, name, start=0, length=None):
        if length is not None and length <= 0:
            self.head(name)  # still report a missing object
            return b""
        kwargs = {"Bucket": self.bucket, "Key": self._key(name)}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        else:
            kwargs["ChecksumMode"] = "ENABLED"  # the whole object: its checksum applies
        with self._errors("reading", name):
            try:
                response = self._client.get_object(**kwargs)
            except botocore.exceptions.ClientError as exc:
                code, _ = _error_code(exc)
                if code == "InvalidRange":
                    return b""  # the range starts at or past the end: nothing there
                if code == "InvalidObjectState":
                    raise self._archived(name) from exc
                raise
            # The body streams from the connection: read it all here, in this thread,
            # through botocore's StreamingBody (`with body as raw` would give the bare
            # urllib3 stream, without botocore's error wrapping and length check).
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        expected = self._expected_length(response, start, length)
        if expected is not None and len(data) != expected:
            raise TransientError(
                f"reading {self._subject(name, False)} failed: the answer from {self.endpoint} "
                f"was cut short ({len(data)} of {expected} bytes)",
                name,
            )
        return data

    @staticmethod
    def _expected_length(response: dict, start: int, length: int | None) -> int | None:
        """How many bytes a GET answer must hold: the range asked for, within the object."""
        match = _CONTENT_RANGE.fullmatch((response.get("ContentRange") or "").strip())
        if match and match.group(3) != "*":
            total = int(match.group(3))
            available = max(0, total - start)
            return available if length is None else min(length, available)
        if start == 0 and length is None and "ContentLength" in response:
            return int(response["ContentLength"])
        return None

    def _archived(self, name: str) -> ArchivedError:
        """The error for a GET refused because the object is in a cold tier."""
        try:
            info = self.head(name)
        except StoreError:
            return ArchivedError(f"object {name} is archived and must be restored first", name)
        if info.restore.status == "in-progress":
            return RestoreInProgressError(f"object {name} is being restored from {info.storage_class}", name)
        return ArchivedError(f"object {name} is in {info.storage_class} and must be restored first", name)

    def head(self, name):
        with self._errors("inspecting", name):
            try:
                response = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
            except botocore.exceptions.ClientError as exc:
                code, _ = _error_code(exc)
                if code in _NOT_FOUND_CODES and not self._bucket_seen:
                    # A HEAD has no error body: a missing bucket also says only 404.
                    self._check_bucket()
                raise
        self._bucket_seen = True
        modified = response.get("LastModified")
        return ObjectInfo(
            name,
            int(response.get("ContentLength", 0)),
            self._reported_class(response.get("StorageClass")),
            parse_restore_header(response.get("Restore")),
            modified.timestamp() if modified else None,
        )

    def _check_bucket(self) -> None:
        """Raise NotFoundError naming the bucket if it does not exist."""
        try:
            exists = self.bucket_exists()
        except PermissionDeniedError:
            return  # allowed to read objects but not to ask about the bucket
        if not exists:
            raise NotFoundError(
                f"bucket {self.bucket} does not exist at {self.endpoint}",
                hint="check the vault URL, or create the vault with 'coldvault init'",
            )
        self._bucket_seen = True

    def capabilities(self) -> Capabilities:
        return Capabilities(connections=self.max_pool, cold_tier=self._cold_tier is not False)

    def list(self, prefix=""):
        paginator = self._client.get_paginator("list_objects_v2")
        skip = len(self.prefix)
        with self._errors("listing"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", ()):
                    modified = item.get("LastModified")
                    yield ObjectInfo(
                        item["Key"][skip:],
                        int(item.get("Size", 0)),
                        self._reported_class(item.get("StorageClass")),
                        RestoreState(),  # the listing does not say; head does
                        modified.timestamp() if modified else None,
                    )

    def delete(self, name):
        with self._errors("deleting", name):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def restore(self, name, days=7, tier="Bulk"):
        if tier not in RESTORE_TIERS:
            raise StoreError(f"unknown restore tier {tier!r} (expected one of {', '.join(RESTORE_TIERS)})", name)
        request = {"Days": int(days), "GlacierJobParameters": {"Tier": tier}}
        with self._errors("restoring", name):
            try:
                response = self._client.restore_object(
                    Bucket=self.bucket, Key=self._key(name), RestoreRequest=request
                )
            except botocore.exceptions.ClientError as exc:
                code, _ = _error_code(exc)
                if code == "RestoreAlreadyInProgress":
                    return False
                if code in _UNSUPPORTED_CODES and not self._has_cold_tier():
                    # No cold tier here (rclone serve s3): every object is readable as it is.
                    self.head(name)  # NotFoundError if there is no such object
                    return False
                if code != "InvalidObjectState":
                    raise
                # Usually: the object is not in an archive class, so it is readable
                # as it is. If it is archived after all, S3 refused this request.
                info = self.head(name)
                if info.readable:
                    return False
                message = exc.response.get("Error", {}).get("Message") or "InvalidObjectState"
                raise StoreError(
                    f"restoring {self._subject(name)} from {info.storage_class} at tier {tier} "
                    f"was refused: {message}",
                    name,
                ) from exc
        # 202 Accepted: a new restore; 200 OK: already restored, expiry extended.
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 202

    def close(self):
        self._client.close()

    # --- bucket administration (coldvault init) -------------------------------------

    def bucket_exists(self) -> bool:
        with self._errors("checking"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                code, _ = _error_code(exc)
                if code in ("404", "NoSuchBucket", "NotFound"):
                    return False
                raise
        self._bucket_seen = True
        return True

    def create_bucket_if_missing(self) -> bool:
        """Create the bucket unless it exists (for `coldvault init`); True if it was created."""
        if self.bucket_exists():
            return False
        kwargs = {"Bucket": self.bucket}
        region = self._client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with self._errors("creating"):
            try:
                self._client.create_bucket(**kwargs)
            except botocore.exceptions.ClientError as exc:
                code, _ = _error_code(exc)
                if code == "BucketAlreadyOwnedByYou":
                    return False
                if code == "BucketAlreadyExists":
                    raise StoreError(
                        f"bucket {self.bucket} at {self.endpoint} belongs to someone else",
                        hint="bucket names are global: choose another one",
                    ) from exc
                raise
        return True
