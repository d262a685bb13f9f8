"""A GCS server on loopback for tests: `gcp-storage-emulator`, in memory, in a thread.

It speaks the JSON API pyarrow's `GcsFileSystem` uses (write, list, read, copy, delete) but
ignores generation preconditions (`ifGenerationMatch`), so no lock can be tested on it. The
exporter finds it through `STORAGE_EMULATOR_HOST`, Google's convention, and sends no
credentials then. `without_google_credentials` keeps every Google request on loopback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pyarrow.fs as pafs
from gcp_storage_emulator.server import create_server

BUCKET = "gcs-tests"


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """Hold a loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def without_google_credentials(env: Mapping[str, str], port: int, home: str) -> dict[str, str]:
    """Return `env` where Google's client libraries find no credentials (no key file, no
    gcloud default under `home`) and send any metadata-server or storage request to the
    refusing loopback `port`, never to the network."""
    values = {k: v for k, v in env.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS",)}
    loopback = f"127.0.0.1:{port}"
    values.update(
        HOME=home,
        GCE_METADATA_ROOT=loopback,  # google-cloud-cpp (pyarrow)
        GCE_METADATA_HOST=loopback,  # the Python libraries
        CLOUD_STORAGE_EMULATOR_ENDPOINT=f"http://{loopback}",  # storage requests, if any
    )
    values.pop("STORAGE_EMULATOR_HOST", None)
    return values


@dataclass(frozen=True)
class GcsServer:
    host: str  # 127.0.0.1:port

    def env(self, **extra: str) -> dict[str, str]:
        """Return the variables that point the exporter at this server, anonymously."""
        return {"STORAGE_EMULATOR_HOST": self.host, **extra}

    def filesystem(self) -> pafs.GcsFileSystem:
        return pafs.GcsFileSystem(
            anonymous=True,
            endpoint_override=self.host,
            scheme="http",
            retry_time_limit=dt.timedelta(seconds=10),
        )

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Return every object under `bucket/prefix` (a path) with its body."""
        fs = self.filesystem()
        found: dict[str, bytes] = {}
        for info in fs.get_file_info(
            pafs.FileSelector(prefix, allow_not_found=True, recursive=True)
        ):
            if info.type == pafs.FileType.File:
                with fs.open_input_stream(info.path) as raw:
                    found[info.path] = bytes(raw.read())
        return found


@contextlib.contextmanager
def gcs_server() -> Iterator[GcsServer]:
    """Serve an in-memory GCS emulator with the bucket `BUCKET` until the block exits."""
    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        port = server._api._httpd.server_address[1]  # port 0: the one the OS chose
        yield GcsServer(f"127.0.0.1:{port}")
    finally:
        server.stop()
