"""`octollm audit`: time arguments, bad input (one line, exit 2, the store never touched), an
unknown task (exit 1) and a store that does not exist yet. No services; the one chDB used is
embedded, in a temporary directory, opened by a subprocess so this process never owns one."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from octollm.audit import queries
from octollm.audit.reader import chdb_owner
from octollm.cli.main import main
from tests.conftest import OCTOLLM, free_port

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00.250z", datetime(2026, 11, 25, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-11-25T11:00:00+01:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        (" now ", NOW),
    ],
)
def test_parse_when_accepts_iso_and_relative(text: str, expected: datetime) -> None:
    assert queries.parse_when(text, option="--since", now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "15", "15x", "-2h", "2026-13-01", "m15"])
def test_parse_when_rejects_with_the_option_named(text: str) -> None:
    with pytest.raises(queries.QueryInputError, match=r"^--until: .* is not an ISO-8601 time"):
        queries.parse_when(text, option="--until", now=NOW)


def test_iso_is_utc_with_milliseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert queries.iso(datetime(2026, 1, 1, 2, 0, 0, 5000, tzinfo=plus_two)) == (
        "2026-01-01T00:00:00.005Z"
    )
    assert queries.iso(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000Z"  # naive (chDB) = UTC


def test_argument_checks() -> None:
    assert queries.check_by("arm") == "arm"
    with pytest.raises(queries.QueryInputError, match="--by: 'tenants' is not one of"):
        queries.check_by("tenants")
    with pytest.raises(queries.QueryInputError, match="--limit"):
        queries.check_limit(0)
    with pytest.raises(queries.QueryInputError, match="later than"):
        queries.check_window(NOW, NOW)


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def audit_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings pointing at a store under tmp_path and a port where nothing listens."""
    for name in [n for n in os.environ if n.startswith("OCTO_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    monkeypatch.setenv("OCTO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OCTO_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("OCTO_AUDIT_PORT", str(free_port()))
    return tmp_path / "audit" / "chdb"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code: int | str | None = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stats", "--since", "last tuesday"], "--since: 'last tuesday' is not an ISO-8601 time"),
        (["stats", "--until", "2026-99-01"], "--until: '2026-99-01' is not an ISO-8601 time"),
        (["stats", "--by", "colour"], "--by: 'colour' is not one of tenant, status, route"),
        (["stats", "--since", "1h", "--until", "2h"], "must be later than --since"),
        (["search", "--since", "soon"], "--since: 'soon' is not an ISO-8601 time"),
        (["search", "--limit", "0"], "--limit: 0 is not between 1 and 10000"),
        (["search", "--limit", "ten"], "'ten' is not a valid integer"),
        (["trace", " "], "TASK_ID is empty"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_no_store(
    argv: list[str], message: str, audit_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["audit", *argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("octollm: error: ") and message in lines[0]
    assert out == ""
    assert not audit_env.exists()


def test_no_store_yet_is_a_clear_exit_1(
    audit_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["audit", "trace", str(uuid.uuid4())], capsys)
    assert code == 1
    assert err.strip() == (
        f"octollm: error: no audit store at {audit_env} yet: the audit sink creates it "
        "(`octollm run`, or `octollm worker audit`)"
    )
    assert not audit_env.exists()


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("OCTO_") or k in ("PATH", "HOME")}
    return subprocess.run(
        [OCTOLLM, "audit", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_migrate_then_unknown_task_in_a_real_chdb(audit_env: Path) -> None:
    first = _subprocess("migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "applied 0001_audit_tables",
        f"chdb:{audit_env}: migrated",
    ]
    again = _subprocess("migrate")
    assert again.stdout.splitlines() == [f"chdb:{audit_env}: up to date"]
    task = str(uuid.uuid4())
    unknown = _subprocess("trace", task)
    assert unknown.returncode == 1
    assert (
        unknown.stderr.strip()
        == f"octollm: error: no audit record of task {task} in chdb:{audit_env}"
    )
    empty = _subprocess("search", "--json")
    assert (empty.returncode, empty.stdout) == (0, "[]\n")
    quiet = _subprocess("stats", "--since", "1d")
    assert quiet.returncode == 0 and quiet.stdout.startswith("no audit events between")
    assert chdb_owner(audit_env) is None  # every command let go of the store


def test_chdb_owner_reads_a_live_pid_and_ignores_a_dead_one(tmp_path: Path) -> None:
    assert chdb_owner(tmp_path) is None
    (tmp_path / "status").write_text("PID: 1\nStarted at: 2026-11-25 10:00:00\n")
    assert chdb_owner(tmp_path) == 1  # init: alive, someone else's
    child = subprocess.Popen(["true"])
    child.wait()
    (tmp_path / "status").write_text(f"PID: {child.pid}\n")
    assert chdb_owner(tmp_path) is None
    (tmp_path / "status").write_text(f"PID: {os.getpid()}\n")
    assert chdb_owner(tmp_path) is None  # this process owning it is no obstacle
