"""A `Store` in a bucket (S3-compatible or GCS) through `pyarrow.fs`: streaming uploads, and a
publication built from copies because object stores cannot rename a directory.

The layout (`exporter.store.layout`) is the local one, under `s3://bucket/prefix` (or `gs://`).

Every file is one object; an object becomes visible only when its upload completes (a
multipart upload killed half way stays invisible), and a PUT replaces an object atomically,
so `write_atomic` is one upload. `publish` is the sequence described in its docstring.

Credentials come only from the provider chain pyarrow's SDK implements (environment,
profile, web identity, instance role; Application Default Credentials for GCS); the endpoint
of an S3-compatible store comes from `--s3-endpoint`, `export.s3_endpoint`,
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, the region from `AWS_REGION`. A GCS emulator is
named by `STORAGE_EMULATOR_HOST` (Google's convention), and is then used without credentials.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import orjson
import pyarrow.fs as pafs

from exporter.api.redact import has_userinfo, redact_url
from exporter.errors import ConfigError, SinkError
from exporter.options import S3_CREDENTIALS, output_location
from exporter.store.base import HashingWriter
from exporter.store.layout import MANIFEST_NAME, SUCCESS_NAME, manifest_path, success_path
from exporter.store.lease import (
    LEASE_S,
    ConditionalObjects,
    LeaseLock,
    Renewer,
    obstore_objects,
)

log = logging.getLogger("exporter.store")

SCHEMES = ("s3", "gs")
CREDENTIAL_VARIABLES = (
    ("access_key_id", "AWS_ACCESS_KEY_ID"),
    ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("session_token", "AWS_SESSION_TOKEN"),
)
# Attempts per request for throttling (503 SlowDown), 5xx and dropped connections, with the
# SDK's exponential backoff (25 ms doubling: about 25 s over ten attempts). The "default"
# strategy has no retry quota, which the "standard" one spends in a long throttled night.
S3_ATTEMPTS = 10
GCS_RETRY_LIMIT = dt.timedelta(minutes=5)
# The GCS client retries a missing token ("Could not create a OAuth2 access token") as if it
# were transient, for the whole retry limit, on every request: a machine without Google
# credentials printed progress for 7 minutes before failing. The check at open time gets a
# short limit, so missing credentials (or an unreachable store) fail before the walk starts.
GCS_OPEN_CHECK_LIMIT = dt.timedelta(seconds=10)
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BucketUri:
    """`scheme://bucket/prefix`, split; `prefix` has no leading or trailing slash."""

    scheme: str
    bucket: str
    prefix: str

    @property
    def base(self) -> str:
        """Return the `bucket/prefix` path pyarrow.fs file systems take."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def __str__(self) -> str:
        return f"{self.scheme}://{self.base}"


def parse_bucket_uri(uri: str) -> BucketUri:
    """Split an `s3://` or `gs://` output URI; ConfigError for anything a bucket cannot hold."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError("export.output", f"{redact_url(uri)!r} is not an s3:// or gs:// URI")
    try:
        output_location(uri)  # no credentials, no options (`inspect` comes here directly)
    except ValueError as exc:
        raise ConfigError("export.output", str(exc)) from None
    bucket, _, prefix = rest.partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", bucket):
        raise ConfigError("export.output", f"{bucket!r} is not a valid bucket name")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigError("export.output", "the prefix must not contain '.' or '..'")
    return BucketUri(scheme, bucket, "/".join(parts))


@dataclass(frozen=True)
class S3Settings:
    """What S3FileSystem needs besides credentials: where the service is, which region."""

    endpoint_override: str | None
    scheme: str
    region: str | None


def s3_settings(endpoint: str | None, environ: Mapping[str, str]) -> S3Settings:
    """Resolve endpoint and region: the flag/config first, then the standard AWS variables.

    `endpoint` is a URL (`http://127.0.0.1:9000`, `https://<acct>.r2.cloudflarestorage.com`)
    or a bare `host:port`, which means https.
    """
    key = "export.s3_endpoint"
    raw = endpoint
    for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if not raw and environ.get(variable):
            key, raw = variable, environ[variable]
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None
    if not raw:
        return S3Settings(None, "https", region)
    shown = redact_url(raw)
    if has_userinfo(raw):  # neither pyarrow nor obstore takes them as the S3 credentials
        raise ConfigError(key, f"{shown!r} carries credentials; {S3_CREDENTIALS}")
    url = urlsplit(raw if "://" in raw else f"https://{raw}")
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ConfigError(key, f"{shown!r} is not an http(s) endpoint")
    if url.path.strip("/") or url.query:
        raise ConfigError(key, f"{shown!r}: give the service endpoint only, without a path")
    return S3Settings(url.netloc, url.scheme, region)


def gcs_emulator(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """Return (scheme, host:port) of the GCS emulator `STORAGE_EMULATOR_HOST` names, if any.

    Google's libraries accept `host:port` (meaning http) or a URL there.
    """
    key = "STORAGE_EMULATOR_HOST"
    raw = environ.get(key)
    if not raw:
        return None
    if has_userinfo(raw):  # the emulator is used anonymously: they would be sent nowhere
        raise ConfigError(
            key, f"{redact_url(raw)!r} carries credentials; a GCS emulator takes none"
        )
    url = urlsplit(raw if "://" in raw else f"http://{raw}")
    if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
        raise ConfigError(key, f"{redact_url(raw)!r} is not an emulator's host:port")
    return url.scheme, url.netloc


def make_filesystem(
    uri: BucketUri,
    *,
    s3_endpoint: str | None = None,
    environ: Mapping[str, str] | None = None,
    gcs_retry_limit: dt.timedelta = GCS_RETRY_LIMIT,
) -> pafs.FileSystem:
    """Return the pyarrow file system for a bucket URI.

    On AWS itself (no endpoint) without `AWS_REGION`, the bucket's region is looked up with
    one unauthenticated request, as `S3FileSystem.from_uri` does; nothing else is sent.
    """
    env = os.environ if environ is None else environ
    if uri.scheme == "gs":
        emulator = gcs_emulator(env)
        if emulator is None:
            return pafs.GcsFileSystem(retry_time_limit=gcs_retry_limit)
        scheme, host = emulator
        return pafs.GcsFileSystem(
            anonymous=True,
            endpoint_override=host,
            scheme=scheme,
            retry_time_limit=gcs_retry_limit,
        )
    settings = s3_settings(s3_endpoint, env)
    region = settings.region
    if region is None and settings.endpoint_override is None:
        region = pafs.resolve_s3_region(uri.bucket)
    return pafs.S3FileSystem(
        region=region,
        endpoint_override=settings.endpoint_override,
        scheme=settings.scheme,
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=S3_ATTEMPTS),
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
        check_directory_existence_before_creation=False,
    )


# Error texts of the AWS and GCS SDKs, as pyarrow passes them on, mapped to one plain reason.
_REASONS = (
    (("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist"), "the bucket does not exist"),
    (
        ("ACCESS_DENIED", "AccessDenied", "Forbidden", "PERMISSION_DENIED"),
        "access denied (check the credentials the provider chain found and their permissions)",
    ),
    (
        (
            "INVALID_ACCESS_KEY_ID",
            "InvalidAccessKeyId",
            "SIGNATURE_DOES_NOT_MATCH",
            "Unauthorized",
            "UNAUTHENTICATED",
        ),
        "the credentials were rejected (unknown key or bad secret)",
    ),
    (
        ("Could not create a OAuth2 access token", "Could not automatically determine credentials"),
        "no usable Google credentials (set GOOGLE_APPLICATION_CREDENTIALS to a service account "
        "key file, or run where the metadata server answers)",
    ),
    (("Path does not exist", "NotFound", "NO_SUCH_KEY"), "no such object"),
    (
        ("SLOW_DOWN", "SlowDown", "SERVICE_UNAVAILABLE"),
        "the store kept throttling (503 SlowDown) after retries",
    ),
    (
        ("NETWORK_CONNECTION", "Couldn't connect", "Connection refused", "curlCode"),
        "cannot reach the store (connection failed after retries)",
    ),
)


def describe_store_error(message: str) -> str:
    """Return one plain reason for an SDK error message (its first line when unrecognised)."""
    for markers, reason in _REASONS:
        if any(marker in message for marker in markers):
            return reason
    lines = message.strip().splitlines()
    return lines[0][:200] if lines else "unknown error"


class ObjectStore:
    """The `Store` protocol over a `pyarrow.fs` bucket file system."""

    name = "store"

    def __init__(
        self,
        fs: pafs.FileSystem,
        uri: BucketUri,
        conditional_store: Callable[[], Any] | None = None,
        lease_s: float = LEASE_S,
    ) -> None:
        self._fs = fs
        self.uri = uri
        self.root = str(uri)
        self._conditional_store = conditional_store  # makes the obstore store of the locks
        self._objects: ConditionalObjects | None = None
        self._leases: list[LeaseLock] = []
        self.lease_s = lease_s
        self.unlocked_reason: str | None = None  # set only for a GCS emulator (see lock)
        self.endpoint_url: str | None = None  # an S3-compatible service's URL (Store)

    # -- paths and errors -------------------------------------------------------------------

    def _abs(self, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"store paths are relative and stay inside the root: {path!r}")
        return f"{self.uri.base}/{path}" if path else self.uri.base

    def _url(self, path: str) -> str:
        return f"{self.uri.scheme}://{self._abs(path)}"

    @contextlib.contextmanager
    def _errors(self, action: str, path: str) -> Iterator[None]:
        try:
            yield
        except SinkError:
            raise
        except OSError as exc:
            reason = describe_store_error(str(exc))
            raise SinkError(self.name, f"cannot {action} {self._url(path)}: {reason}") from exc

    def _info(self, path: str) -> pafs.FileInfo:
        with self._errors("stat", path):
            return self._fs.get_file_info(self._abs(path))

    # -- the Store protocol -----------------------------------------------------------------

    def check_bucket(self) -> None:
        """Fail early with one line when the bucket is missing or the credentials cannot see it.

        Listing the root is the cheapest request that needs both the bucket and read access;
        a missing bucket otherwise surfaces as "not found" on the first read, much later.
        """
        with self._errors("open", ""):
            info = self._fs.get_file_info(self.uri.bucket)
            if info.type == pafs.FileType.NotFound:
                raise SinkError(self.name, f"cannot open {self.root}: the bucket does not exist")
            self._fs.get_file_info(pafs.FileSelector(self.uri.base, allow_not_found=True))

    def local_path(self, path: str) -> Path | None:
        return None

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[HashingWriter]:
        """Stream into a multipart upload; the object appears, complete, when the block exits.

        pyarrow uploads parts in the background while the writer continues, so memory holds
        a few parts (5-10 MiB each), whatever the file's size. On an error the upload is
        closed and the object deleted: it was never committed.
        """
        target = self._abs(path)
        with self._errors("write", path):
            stream = self._fs.open_output_stream(target)
        writer = HashingWriter(cast(IO[bytes], stream))
        try:
            yield writer
            writer.check()
            with self._errors("write", path):
                stream.close()  # completes the multipart upload
        except BaseException:
            with contextlib.suppress(Exception):
                stream.close()
            with contextlib.suppress(Exception):
                self._fs.delete_file(target)
            raise

    def open_read(self, path: str) -> IO[bytes]:
        with self._errors("read", path):
            return cast(IO[bytes], self._fs.open_input_file(self._abs(path)))

    def write_atomic(self, path: str, data: bytes) -> None:
        """One upload: readers of an object see the old version or the new one, never a mix."""
        with self._errors("write", path), self._fs.open_output_stream(self._abs(path)) as out:
            out.write(data)

    def replace(self, src: str, dst: str) -> None:
        """Copy `src` over `dst` (server side, atomic for `dst`), then delete `src`."""
        with self._errors("replace", dst):
            self._fs.move(self._abs(src), self._abs(dst))

    def read_bytes(self, path: str) -> bytes | None:
        with self._errors("read", path):
            try:
                with self._fs.open_input_stream(self._abs(path)) as raw:
                    return bytes(raw.read())
            except FileNotFoundError:
                return None

    def exists(self, path: str) -> bool:
        return bool(self._info(path).type != pafs.FileType.NotFound)

    def size(self, path: str) -> int:
        info = self._info(path)
        if info.type != pafs.FileType.File or info.size is None:
            raise SinkError(self.name, f"cannot stat {self._url(path)}: no such object")
        return int(info.size)

    def list_dir(self, path: str) -> list[str]:
        """Return the sorted names one level below `path` ([] when nothing is there).

        On GCS the listing is recursive: pyarrow's one-level GCS listing returns objects
        only, never the prefixes below (`snapshot_date=D/` would be missing), so the names
        of the first level are taken from every object under `path`.
        """
        base = self._abs(path)
        recursive = self.uri.scheme == "gs"
        with self._errors("list", path):
            infos = self._fs.get_file_info(
                pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
            )
        names = {info.path[len(base) :].strip("/").split("/", 1)[0] for info in infos}
        return sorted(name for name in names if name)

    def make_dirs(self, path: str) -> None:
        """Do nothing: prefixes exist through the objects under them (no marker objects)."""

    def delete(self, path: str) -> None:
        """Delete one object (pyarrow keeps its parent prefix alive with an empty `dir/` key)."""
        with self._errors("delete", path), contextlib.suppress(FileNotFoundError):
            self._fs.delete_file(self._abs(path))

    def delete_tree(self, path: str) -> None:
        """Delete the object `path`, or every object under it and its `dir/` marker."""
        with self._errors("delete", path), contextlib.suppress(FileNotFoundError):
            if self._fs.get_file_info(self._abs(path)).type == pafs.FileType.File:
                self._fs.delete_file(self._abs(path))
            elif self.uri.scheme == "gs":  # no marker objects; delete_dir wants one
                self._fs.delete_dir_contents(self._abs(path), missing_dir_ok=True)
            else:
                self._fs.delete_dir(self._abs(path))

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """Hold the lease lock object `path` for the block (see `exporter.store.lease`).

        Conditional creates and updates (S3 `If-None-Match`/`If-Match`, as AWS, MinIO, R2
        and moto honour them) make the first run the holder and a second one exit 8; a
        crashed holder's lease expires and its successor takes it over. `publish` verifies
        the lease first, so a run that lost it never publishes.

        On a GCS emulator (`STORAGE_EMULATOR_HOST`) there is no lock, with a warning: obstore's
        GCSStore would ask a metadata server for a token, and gcp-storage-emulator ignores
        generation preconditions. Production gs:// is never unlocked this way.
        """
        if self.unlocked_reason is not None:
            log.warning("no run lock on %s: %s", self.root, self.unlocked_reason)
            yield
            return
        lock = LeaseLock(
            self._conditional(), self._key(path), where=self._url(path), lease_s=self.lease_s
        )
        with self._errors("lock", path):
            lock.acquire()
        self._leases.append(lock)
        try:
            with Renewer(lock, lock.renew_every_s):
                yield
        finally:
            self._leases.remove(lock)
            with contextlib.suppress(Exception), self._errors("unlock", path):
                lock.release()

    def _key(self, path: str) -> str:
        """Return `path` as an object key inside the bucket."""
        return self._abs(path).removeprefix(f"{self.uri.bucket}/")

    def _conditional(self) -> ConditionalObjects:
        if self._objects is None:
            if self._conditional_store is None:
                raise SinkError(self.name, f"{self.uri.scheme}:// has no conditional writes here")
            self._objects = obstore_objects(self._conditional_store())
        return self._objects

    def _verify_leases(self) -> None:
        for lock in self._leases:
            with self._errors("verify the lock of", ""):
                lock.verify()

    def publish(self, staged: str, target: str, *, grace_seconds: float = 1.0) -> None:
        """Copy the sealed directory `staged` into `target` (`snapshot_date=D`); `_SUCCESS` last.

        A bucket has no rename, so the snapshot cannot appear in one step. The order keeps
        one promise: while `D/_SUCCESS` exists, `D/` holds exactly the files its manifest
        lists. 1. delete `D/_SUCCESS` (re-publish only: D is "in progress" from now on);
        2. copy every part the staged manifest lists (server-side copies; names carry the
        run tag, so no previous part is overwritten); 3. copy `_manifest.json`; 4. after
        `grace_seconds` (a reader that read the old manifest finishes its files) delete
        every part of D the new manifest does not list; 5. write `_SUCCESS`. Every step is
        idempotent, so a publish killed anywhere is completed by running it again (a resumed
        run does, since D has no `_SUCCESS` of its own run yet).
        """
        self._verify_leases()
        manifest = self.read_bytes(manifest_path(staged))
        if manifest is None or not self.exists(success_path(staged)):
            raise SinkError(self.name, f"refusing to publish {self._url(staged)}: not sealed")
        names = manifest_files(manifest)
        self.delete(success_path(target))
        for name in names:
            src, dst = posixpath.join(staged, name), posixpath.join(target, name)
            with self._errors("publish", dst):
                self._fs.copy_file(self._abs(src), self._abs(dst))
        self.write_atomic(manifest_path(target), manifest)
        keep = {*names, MANIFEST_NAME, SUCCESS_NAME}
        stale = [entry for entry in self.list_dir(target) if entry not in keep]
        if stale:
            time.sleep(grace_seconds)
            for entry in stale:  # the previous run's parts, and anything else left in D
                self.delete_tree(posixpath.join(target, entry))
        self.write_atomic(success_path(target), b"")


def manifest_files(manifest: bytes) -> list[str]:
    """Return the file names a manifest lists (relative to its snapshot directory)."""
    try:
        data: Any = orjson.loads(manifest)
        names = [str(entry["path"]) for entry in data["files"]]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise SinkError("store", f"the staged manifest is unreadable: {exc}") from exc
    if any("/" in name or name in ("", ".", "..") for name in names):
        raise SinkError("store", "the staged manifest names a file outside its directory")
    return names


def open_object_store(
    uri: str,
    *,
    s3_endpoint: str | None = None,
    environ: Mapping[str, str] | None = None,
    lease_s: float = LEASE_S,
) -> ObjectStore:
    """Return the store of an `s3://` or `gs://` output, after checking its bucket is usable."""
    parsed = parse_bucket_uri(uri)
    try:
        fs = make_filesystem(parsed, s3_endpoint=s3_endpoint, environ=environ)
    except OSError as exc:  # e.g. an unreadable credentials file
        raise SinkError("store", f"cannot open {parsed}: {describe_store_error(str(exc))}") from exc
    env = os.environ if environ is None else environ
    store = ObjectStore(
        fs, parsed, lambda: conditional_store(parsed, s3_endpoint, env), lease_s=lease_s
    )
    if parsed.scheme == "gs":  # the same check, with a retry limit of seconds (see above)
        quick = make_filesystem(parsed, environ=environ, gcs_retry_limit=GCS_OPEN_CHECK_LIMIT)
        ObjectStore(quick, parsed).check_bucket()
        if gcs_emulator(env) is not None:
            store.unlocked_reason = "STORAGE_EMULATOR_HOST names a GCS emulator (lock untested)"
    else:
        settings = s3_settings(s3_endpoint, env)
        if settings.endpoint_override is not None:
            store.endpoint_url = f"{settings.scheme}://{settings.endpoint_override}"
        store.check_bucket()
    return store


def conditional_store(uri: BucketUri, s3_endpoint: str | None, environ: Mapping[str, str]) -> Any:
    """Return the obstore store that makes the lock's conditional requests on this bucket.

    pyarrow.fs cannot send `If-None-Match`/`If-Match`; obstore (Rust object_store) can, with
    credentials from the same environment variables (it does not read ~/.aws profiles).
    """
    from obstore.store import GCSStore, S3Store

    if uri.scheme == "gs":
        return GCSStore(uri.bucket)
    settings = s3_settings(s3_endpoint, environ)
    options: dict[str, Any] = {"conditional_put": "etag"}
    # The same variables the AWS chain reads first; passed explicitly so the mapping given
    # (not only os.environ) is honoured, and no instance-metadata request is made off AWS.
    for name, variable in CREDENTIAL_VARIABLES:
        if environ.get(variable):
            options[name] = environ[variable]
    if "access_key_id" not in options and environ.get("AWS_EC2_METADATA_DISABLED") == "true":
        raise SinkError("store", f"cannot lock {uri}: no AWS credentials in the environment")
    if settings.endpoint_override is not None:
        options["endpoint"] = f"{settings.scheme}://{settings.endpoint_override}"
        options["client_options"] = {"allow_http": settings.scheme == "http"}
    return S3Store(uri.bucket, region=settings.region or "us-east-1", **options)
