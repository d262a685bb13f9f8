"""An S3 protocol server on loopback (moto's server mode) for the object-store tests.

The server runs in a thread of the test process, so tests can switch moto's IAM enforcement
on and off around a run; the exporter under test is a subprocess that reaches it over HTTP
like any S3-compatible endpoint (`AWS_ENDPOINT_URL`), with credentials from the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
