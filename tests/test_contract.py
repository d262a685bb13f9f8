"""The user-visible contract, pinned: help texts, files, schemas, manifest, plan, error lines.

Each test renders one surface as text and compares it with a golden file in
tests/contract_golden/. Volatile parts (run ids, timestamps, digests, sizes, ports, versions)
are replaced by placeholders first, so a difference is a change a user would see. An
intended change (a new flag, a new manifest key) is one reviewable golden update:

    make golden          # = pytest tests/test_contract.py --update-golden

then read `git diff tests/contract_golden/` before committing it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from exporter.cli.commands import main
from tests.helpers import EmulatorProcess, clean_env, emulator_process, run_cli

GOLDEN = Path(__file__).parent / "contract_golden"
DATE = "2026-11-27"
RUN = re.compile(r"-[0-9a-f]{8}\.")  # the run id in a part file's name
PORT = re.compile(r"127\.0\.0\.1:\d+")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def check_golden(name: str, text: str, update: bool) -> None:
    """Fail with a unified diff when `text` differs from the golden file `name`."""
    path = GOLDEN / name
    if update:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"no golden file {path}; create it with `make golden` and review it")
    expected = path.read_text()
    if text != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"golden/{name}",
            f"now/{name}",
        )
        pytest.fail(
            "the user-visible contract changed (if intended: `make golden`, review the diff):\n"
            + "".join(diff),
            pytrace=False,
        )


def dump(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


def placeholder(value: Any) -> str:
    return f"<{type(value).__name__}>"


def normalize_text(text: str) -> str:
    return PORT.sub("127.0.0.1:<port>", RUN.sub("-<run>.", text))


# ---------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", ["", "export", "emulator", "demo", "inspect", "report"])
def test_help(
    command: str,
    update_golden: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every command's --help: flags, metavars, defaults, help texts and examples."""
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    monkeypatch.setenv("NO_COLOR", "1")
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"] if command else ["--help"])
    assert caught.value.code == 0
    text = "\n".join(line.rstrip() for line in capsys.readouterr().out.splitlines()) + "\n"
    check_golden(f"help-{command or 'root'}.txt", text, update_golden)


# ------------------------------------------------------------------------------ a real export
class Export:
    """One export of every built-in format, run by the real CLI against the emulator."""

    def __init__(self, out: Path, stderr: str, emu: EmulatorProcess) -> None:
        self.out = out
        self.snapshot = out / f"snapshot_date={DATE}"
        self.stderr = stderr
        self.emu = emu


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Export]:
    out = tmp_path_factory.mktemp("contract") / "out"
    with emulator_process(images=150, seed=3) as emu:
        args = ["export", "--output", str(out), "--snapshot-date", DATE, "--log-format", "json"]
        args += ["--format", "parquet", "--format", "ndjson", "--format", "duckdb"]
        # One cursor: meta columns are named in first-seen order, which a both-ends walk
        # leaves to timing (two paths may even swap a `__2` suffix).
        args += ["--walk", "single"]
        result = run_cli(args, emu.env())
        assert result.returncode == 0, result.stderr
        yield Export(out, result.stderr, emu)


def test_file_names(export: Export, update_golden: bool) -> None:
    """The files an export leaves under OUT (run ids replaced)."""
    names = sorted(str(p.relative_to(export.out)) for p in export.out.rglob("*"))
    check_golden("export-files.txt", normalize_text("\n".join(names) + "\n"), update_golden)


VOLATILE_MANIFEST = {"run_id", "exporter_version", "started_at", "finished_at"}
VOLATILE_COUNTS = {"pages", "requests", "retries", "throttled", "waits", "wait_seconds"}


def normalize_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return the manifest with values that differ run to run replaced by their type."""
    data = {k: placeholder(v) if k in VOLATILE_MANIFEST else v for k, v in manifest.items()}
    data["counts"] = {
        k: placeholder(v) if k in VOLATILE_COUNTS else v for k, v in manifest["counts"].items()
    }
    data["request"] = orjson.loads(normalize_text(orjson.dumps(manifest["request"]).decode()))
    data["files"] = [
        {
            **f,
            "path": normalize_text(f["path"]),
            "bytes": placeholder(f["bytes"]),
            "sha256": placeholder(f["sha256"]),
        }
        for f in manifest["files"]
    ]
    return data


def test_manifest(export: Export, update_golden: bool) -> None:
    """_manifest.json: every key, in order, and every value that does not vary run to run."""
    manifest = orjson.loads((export.snapshot / "_manifest.json").read_bytes())
    check_golden("export-manifest.json", dump(normalize_manifest(manifest)), update_golden)


def test_schemas(export: Export, update_golden: bool) -> None:
    """The Parquet schema, the NDJSON keys and the DuckDB table's columns."""
    (parquet,) = export.snapshot.glob("*.parquet")
    schema = pq.read_schema(parquet)
    (ndjson,) = export.snapshot.glob("*.ndjson")
    rows = [orjson.loads(line) for line in ndjson.read_bytes().splitlines()]
    keys = sorted({key for row in rows for key in row})
    with duckdb.connect(str(export.out / "images.duckdb"), read_only=True) as con:
        table = [f"{name}: {kind}" for name, kind, *_ in con.execute("DESCRIBE images").fetchall()]
    text = dump(
        {
            "parquet": [f"{field.name}: {field.type}" for field in schema],
            "parquet_metadata_keys": sorted(k.decode() for k in (schema.metadata or {})),
            "ndjson_first_row_keys": list(rows[0]),
            "ndjson_keys": keys,
            "duckdb_images": table,
        }
    )
    check_golden("export-schemas.json", text, update_golden)


def test_summary_log(export: Export, update_golden: bool) -> None:
    """--log-format json: the summary record a scheduler parses (its keys, in order)."""
    records = [orjson.loads(line) for line in export.stderr.splitlines()]
    (summary,) = [r for r in records if r["message"] == "summary"]
    shape = {
        "record_keys": list(summary),
        "summary": {k: placeholder(v) for k, v in summary["summary"].items()},
    }
    check_golden("export-summary-log.json", dump(shape), update_golden)


def test_inspect(export: Export, update_golden: bool) -> None:
    """`inspect` of the export: the text line and the --json report."""
    text = run_cli(["inspect", str(export.out)])
    report = run_cli(["inspect", str(export.out), "--json"])
    assert text.returncode == 0 and report.returncode == 0, text.stderr + report.stderr
    data = [{**r, "bytes": placeholder(r["bytes"])} for r in orjson.loads(report.stdout)]
    line = re.sub(r"[\d,]+ bytes", "<bytes> bytes", text.stdout)
    check_golden("inspect.txt", line + dump(data), update_golden)


# --------------------------------------------------------------------------------- dry run
DRY_RUN_CONFIG = """\
[export]
account_id = "acc-from-file"
formats = ["parquet", "ndjson"]
[request]
per_page = 500
filters = ["meta.status[eq]=active"]
[walk]
quota = 600
[ndjson]
gzip = true
"""


def test_dry_run_plan(update_golden: bool, tmp_path: Path) -> None:
    """--dry-run: the resolved plan (file < env < flag) and the requests it would send."""
    config = tmp_path / "c.toml"
    config.write_text(DRY_RUN_CONFIG)
    env = {**clean_env(), "CLOUDFLARE_API_TOKEN": "secret-token-1", "CLOUDFLARE_ACCOUNT_ID": "acc"}
    env["CLOUDFLARE_BASE_URL"] = "http://127.0.0.1:9/client/v4"
    plans = {}
    for name, extra in {
        "defaults": [],
        "configured": ["--config", str(config), "--sort-order", "asc", "--output", "o"],
        "batch": ["--batch-api", "--creator", "", "--walk", "single"],
    }.items():
        # in an empty directory: the plan reads the output's latest night (`--walk auto`)
        argv = ["export", "--dry-run", "--snapshot-date", DATE, *extra]
        result = run_cli(argv, env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "secret-token-1" not in result.stdout
        plans[name] = orjson.loads(normalize_text(result.stdout))
    check_golden("dry-run.json", dump(plans), update_golden)


# ------------------------------------------------------------------------------ error lines
# (argv, config file text or None, extra env) -> our own one-line errors (argparse's own
# messages vary between Python versions and are pinned by test_cli.py's exit codes instead).
ERRORS: list[tuple[list[str], str | None, dict[str, str | None]]] = [
    (["export", "--per-page", "5"], None, {}),
    (["export", "--snapshot-date", "2026-13-01"], None, {}),
    (["export", "--base-url", "api.example"], None, {}),
    (["export", "--batch-base-url", "batch.example"], None, {}),
    (["export", "--format", "xlsx"], None, {}),
    (["export", "--output", " "], None, {}),
    (["export", "--filter", "status=1"], None, {}),
    (["export", "--filter", "meta.a[ne]=1"], None, {}),
    (["export"], None, {"CLOUDFLARE_API_TOKEN": None}),
    (["export"], None, {"CLOUDFLARE_ACCOUNT_ID": None}),
    (["export"], None, {"CLOUDFLARE_BASE_URL": "ftp://x"}),
    (["export", "--config", "/nonexistent.toml"], None, {}),
    (["export"], "[export]\nouptut = 'x'\n", {}),
    (["export"], "[exprot]\noutput = 'x'\n", {}),
    (["export"], "export = 1\n", {}),
    (["export"], "[request]\nper_page = '9'\n", {}),
    (["export"], "[request]\nper_page = true\n", {}),
    (["export"], "[request]\nfilters = [1]\n", {}),
    (["export"], "[request]\nsort_order = 'up'\n", {}),
    (["export"], "[walk]\nmargin = 2.0\n", {}),
    (["export"], "[walk]\nmargin = 0\n", {}),
    (["export"], "[walk]\nquota = 0\n", {}),
    (["export"], "[walk]\nwindow_s = -1\n", {}),
    (["export"], "[walk]\nmax_attempts = 0\n", {}),
    (["export"], "[walk]\ndeadline_s = 0\n", {}),
    (["export"], "[walk]\nread_timeout_s = 0\n", {}),
    (["export"], "[walk]\nmode = 'zig'\n", {}),
    (["export"], "[normalize]\nschema_contract = 'x'\n", {}),
    (["export"], "[normalize]\ndepth = 0\n", {}),
    (["export"], "[normalize]\ncolumn_cap = -1\n", {}),
    (["export"], "[export]\nformats = []\n", {}),
    (["export"], "[export]\nsnapshot_date = 'yesterday'\n", {}),
    (["export"], "[parquet]\ncodec = 'lzma'\n", {}),
    (["export"], "[parquet]\npart_rows = 0\n", {}),
    (["export"], "[parquet]\nrow_group_rows = 0\n", {}),
    (["export"], "[ndjson]\ngzip = 'yes'\n", {}),
    (["export"], "[duckdb]\npath = 3\n", {}),
    # credentials written into URLs: refused where they cannot work, never printed (issue 26)
    (["export", "--base-url", "http://u:S3CRET@api.example/client/v4"], None, {}),
    (["export"], None, {"CLOUDFLARE_BASE_URL": "https://u:S3CRET@api.example/client/v4"}),
    (["export", "--base-url", "https://api.example/client/v4?token=S3CRET"], None, {}),
    (["export", "--batch-base-url", "https://S3CRET@batch.example"], None, {}),
    (["export", "--s3-endpoint", "http://ak:S3CRET@127.0.0.1:9000"], None, {}),
    (["export", "--output", "s3://ak:S3CRET@bkt/x"], None, {}),
    (["export", "--output", "s3://bkt/x?X-Amz-Signature=S3CRET"], None, {}),
    (["export", "--output", "s3://bkt/x"], None, {"AWS_ENDPOINT_URL": "http://a:S3CRET@h:9"}),
    (["export", "--output", "gs://bkt/x"], None, {"STORAGE_EMULATOR_HOST": "u:S3CRET@h:9"}),
    (["export", "--pushgateway", "ftp://m:S3CRET@gw:9091"], None, {}),
    (["export", "--pushgateway", "http://m@gw:9091"], None, {}),
    (
        ["export"],
        "[metrics]\npushgateway = 'http://m:S3CRET@gw:9091'\npushgateway_password_env = 'PGW'\n",
        {"PGW": "S3CRET"},
    ),
    (
        ["export"],
        "[metrics]\npushgateway = 'http://m@gw:9091'\npushgateway_password_env = 'PGW'\n",
        {"PGW": None},
    ),
    (["inspect", "s3://ak:S3CRET@bkt/x"], None, {}),
    (["demo", "--images", "0"], None, {}),
    (["inspect", "/nonexistent-dir"], None, {}),
    (["report", "/nonexistent-dir"], None, {}),
]


def test_error_lines(
    update_golden: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad input: the exact error line and exit code of each case."""
    monkeypatch.chdir(tmp_path)
    lines = []
    for argv, config, env in ERRORS:
        for key in [k for k in os.environ if k.startswith("CLOUDFLARE_")]:
            monkeypatch.delenv(key)
        for key in {k for _, _, case_env in ERRORS for k in case_env}:
            monkeypatch.delenv(key, raising=False)
        base = {"CLOUDFLARE_API_TOKEN": "tok-secret-1", "CLOUDFLARE_ACCOUNT_ID": "acc"}
        for key, value in {**base, **env}.items():
            if value is not None:
                monkeypatch.setenv(key, value)
        args = list(argv)
        if config is not None:
            (tmp_path / "c.toml").write_text(config)
            args += ["--config", "c.toml"]
        code = main(args)
        (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert "S3CRET" not in line and "tok-secret-1" not in line, line
        case = " ".join(repr(a) if not a or " " in a else a for a in args)
        if config is not None:
            case += f"  # c.toml: {config!r}"
        if env:
            case += f"  # env: {env}"
        lines.append(f"$ {case}\n[{code}] {line}\n")
    check_golden("error-lines.txt", "".join(lines), update_golden)
