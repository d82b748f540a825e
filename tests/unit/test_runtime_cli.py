"""`octollm worker ...`: argument errors in one line, the reflex worker's exec line."""

from __future__ import annotations

from pathlib import Path

import pytest

from octollm.arms import ARMS
from octollm.cli import worker
from octollm.cli.main import main
from octollm.contracts.schemas import schemas_dir
from octollm.runtime.reflex import injection_model

pytestmark = pytest.mark.unit


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code: int | str | None = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OCTO_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("OCTO_TOPIC_PREFIX", "env1.")
    monkeypatch.setenv("OCTO_CONFIG", str(tmp_path / "none.toml"))


def test_unknown_arm_exits_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["worker", "arm", "nope"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"octollm: error: unknown arm 'nope'; registered: {', '.join(sorted(ARMS))}"
    ]
    assert {"planner", "judge", "safety_guardian"} <= set(ARMS)


def test_reflex_worker_execs_the_binary_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "octollm-reflex"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("OCTO_REFLEX_BIN", str(binary))
    monkeypatch.setattr(worker, "_ensure_topics", lambda settings: None)
    calls: list[list[str]] = []
    monkeypatch.setattr(worker.os, "execv", lambda path, argv: calls.append(argv))
    code, _ = run_cli(["worker", "reflex", "--instance", "r2"], capsys)
    assert code == 0
    assert calls == [
        [
            str(binary),
            "run",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--topic-prefix",
            "env1.",
            "--schemas-dir",  # the package's contracts, not the checkout cargo built in
            str(schemas_dir()),
            "--max-goal-bytes",  # octollm.toml's value reaches the binary, which cannot read it
            "65536",
            "--injection-model",  # this checkout's weights, not the checkout cargo built in
            str(injection_model()),
            "--instance",
            "r2",
        ]
    ]


def test_missing_reflex_binary_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCTO_REFLEX_BIN", str(tmp_path / "missing"))
    code, err = run_cli(["worker", "reflex"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "OCTO_REFLEX_BIN" in err
