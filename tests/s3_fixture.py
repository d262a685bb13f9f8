"""An S3 protocol server on loopback (moto's server mode) for the object-store tests.

The server runs in a thread of the test process, so tests can switch moto's IAM enforcement
on and off around a run; the exporter under test is a subprocess that reaches it over HTTP
like any S3-compatible endpoint (`AWS_ENDPOINT_URL`), with credentials from the environment.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pyarrow.fs as pafs
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCESS_KEY = "testing"  # moto accepts any key while IAM enforcement is off
SECRET_KEY = "testing"


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint, and clients to prepare and inspect buckets."""

    endpoint: str

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )

    def iam(self) -> Any:
        return boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def filesystem(self) -> pafs.S3FileSystem:
        """Return a pyarrow file system reading this server (to check what the exporter wrote)."""
        host = self.endpoint.removeprefix("http://")
        return pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            endpoint_override=host,
            scheme="http",
        )

    def env(self, **extra: str) -> dict[str, str]:
        """Return the AWS variables a container would get: endpoint, region, credentials."""
        values = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance role off AWS
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        values.update(extra)
        return values

    def objects(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Return every key under `prefix` with its ETag."""
        found: dict[str, str] = {}
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = item["ETag"]
        return found

    @contextlib.contextmanager
    def iam_enforced(self) -> Iterator[None]:
        """Make the server check every request against IAM (off again when the block exits)."""
        saved = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        try:
            yield
        finally:
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = saved


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """Run moto's S3 server on a free loopback port until the block exits."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class FaultPlan:
    """Which requests fail: every `every`-th gets 503 SlowDown, the one after it is dropped."""

    every: int = 6
    requests: int = 0
    throttled: int = 0
    dropped: int = 0

    def fault(self) -> str | None:
        """Return "slowdown", "drop" or None for the next request (counted here)."""
        self.requests += 1
        if self.requests % self.every == 0:
            self.throttled += 1
            return "slowdown"
        if self.requests % self.every == 1 and self.requests > 1:
            self.dropped += 1
            return "drop"
        return None


class _FaultProxy(http.server.BaseHTTPRequestHandler):
    """Forward one request to the S3 server, unless the plan says to fail it."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    plan: FaultPlan
    lock: threading.Lock

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the test reports what matters."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _relay(self) -> None:
        body = self._body()
        with self.lock:
            fault = self.plan.fault()
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "slowdown":
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
        finally:
            upstream.close()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "content-length", "connection", "date"):
                self.send_header(key, value)
        length = reply.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


@contextlib.contextmanager
def fault_proxy(server: S3Server, plan: FaultPlan) -> Iterator[str]:
    """Serve a throttling, connection-dropping proxy of `server`; yield its endpoint URL."""
    host, _, port = server.endpoint.removeprefix("http://").partition(":")
    handler = type(
        "Proxy",
        (_FaultProxy,),
        {"upstream": (host, int(port)), "plan": plan, "lock": threading.Lock()},
    )
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    proxy.daemon_threads = True
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
