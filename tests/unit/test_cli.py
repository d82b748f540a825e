"""Bad arguments: one clear line on stderr, a non-zero exit, nothing sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octollm.cli.main import main

pytestmark = pytest.mark.unit


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code: int | str | None = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture(autouse=True)
def _unreachable_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing in these tests may reach a broker: point at a closed port with a short timeout.
    monkeypatch.setenv("OCTO_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("OCTO_CONNECT_TIMEOUT_S", "1")
    from octollm.settings import get_settings

    get_settings.cache_clear()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["version"], capsys)
    assert code == 0
    assert out.startswith("octollm 0.1.0")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["tail"], "Missing argument 'TOPIC'"),
        (["tail", "octo.tasks.v1", "--from", "yesterday"], "--from: expected beginning, end"),
        (["tail", "octo.tasks.v1", "--limit", "0"], "--limit"),
        (["produce", "--format", "xml"], "--format"),
        (["produce", "--file", "/nonexistent/tasks.jsonl"], "cannot read /nonexistent/tasks.jsonl"),
        (["infra", "up", "--brokers", "2"], "--brokers"),
        (["topics", "create", "--what"], "No such option"),
    ],
)
def test_bad_arguments_one_line_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("octollm: error: ")
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err


def test_malformed_jsonl_exits_2_before_any_broker_contact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"tenant_id": "a", "goal": "ok"}\n{"tenant_id": "a", "goal": "x", "priority": "NOW"}\n'
    )
    code, out, err = run_cli(["produce", "--file", str(tasks)], capsys)
    assert code == 2
    assert "line 2: field 'priority'" in err
    assert "nothing was sent" in err
    assert out == ""  # no ids printed: nothing was produced


def test_bad_setting_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCTO_PARTITIONS", "lots")
    from octollm.settings import get_settings

    get_settings.cache_clear()
    code, _, err = run_cli(["topics", "create"], capsys)
    assert code == 2
    assert err.startswith("octollm: error: setting OCTO_PARTITIONS")


def test_unreachable_broker_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["topics", "create"], capsys)
    assert code == 1
    assert "cannot reach Kafka at 127.0.0.1:1 within 1s" in err


def _cluster_of(data_dir: Path, brokers: int) -> None:
    (data_dir / "kafka").mkdir(parents=True)
    (data_dir / "kafka" / "cluster.json").write_text(
        json.dumps({"cluster_id": "abc", "brokers": brokers, "kafka_version": "4.4.0"})
    )


def test_run_on_a_cluster_of_another_size_is_one_line_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _cluster_of(tmp_path, 3)
    monkeypatch.setenv("OCTO_DATA_DIR", str(tmp_path))
    code, out, err = run_cli(["run", "--brokers", "1", "--no-llm", "--no-examples"], capsys)
    assert code == 1
    assert err.startswith("octollm: error: ") and len(err.strip().splitlines()) == 1, err
    # the hint names the option that uses the cluster that is there
    assert "3-broker cluster" in err and "pass --brokers 3" in err
    assert out == ""  # nothing was started


def test_run_brokers_must_be_one_or_three(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["run", "--brokers", "2", "--no-examples"], capsys)
    assert code == 2
    assert err.strip() == "octollm: error: invalid value for '--brokers': 2 (must be 1 or 3)"


def test_a_multi_line_infra_error_is_one_line_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from octollm.supervisor import kafka

    def fail(*_args: object, **_kwargs: object) -> None:
        raise kafka.InfraError("kafka node 0 exited early; last log lines:\nline one\nline two")

    monkeypatch.setattr(kafka, "up", fail)
    monkeypatch.setenv("OCTO_DATA_DIR", str(tmp_path))
    for argv in (["run", "--no-examples", "--no-llm"], ["infra", "up", "--no-llm"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 1
        assert err.strip() == (
            "octollm: error: kafka node 0 exited early; last log lines: "
            "(+2 more line(s) with OCTO_LOG_LEVEL=DEBUG)"
        )
