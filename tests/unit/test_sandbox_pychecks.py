"""The one harness for code checks (`octollm.sandbox.run_checks`): real runs in the real sandbox,
no mocks. Passing, failing and raising checks, code that does not load, loops, floods, and
checks that try to write outside their work dir or reach the network (as in
test_sandbox_escapes.py, whose machine requirements apply: root and a network namespace)."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from octollm.sandbox import PyCheck, Sandbox, SandboxPolicy, SandboxRefused, run_checks
from octollm.sandbox.pychecks import OUTPUT_CHARS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
ADD = "def add(a, b):\n    return a + b\n"
SANDBOX = Sandbox(SandboxPolicy(wall_s=5.0, cpu_s=5))


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ("add(2, 3) == 5", PyCheck("add(2, 3) == 5", "eq", "add(2, 3)", "5")),
        ("  is_prime(7) ", PyCheck("is_prime(7)", "eval")),
        ("add(1, 1) == 2 == 2", PyCheck("add(1, 1) == 2 == 2", "eval")),  # a chain: truthy
        ("assert add(1, 1) == 2", PyCheck("assert add(1, 1) == 2", "exec")),
        ("x = add(1, 2); assert x == 3", PyCheck("x = add(1, 2); assert x == 3", "exec")),
    ],
)
def test_parse(source: str, check: PyCheck) -> None:
    assert PyCheck.parse(source) == check


def test_parse_refuses_what_is_not_python() -> None:
    with pytest.raises(ValueError, match="not a Python check"):
        PyCheck.parse("add(2, 3) returns five")


async def test_passing_failing_and_raising_checks_each_say_why() -> None:
    report = await run_checks(
        ADD + "print('loaded')\n",
        [
            "add(2, 3) == 5",
            "assert add(1, 1) == 2",
            "add(2, 3) == 6",
            "assert add(1, 1) == 3, 'one and one'",
            "add(-1, 1)",
            "add(1) == 1",
            "undefined_name(1)",
        ],
        sandbox=SANDBOX,
    )
    assert report.loaded and not report.error and report.limit is None, report
    assert [(o.status, o.detail) for o in report.outcomes] == [
        ("passed", "add(2, 3) returned 5, expected 5"),
        ("passed", "assertion held"),
        ("failed", "add(2, 3) returned 5, expected 6"),
        ("failed", "assertion failed: one and one"),
        ("failed", "evaluated to 0"),  # falsy
        ("error", "raised TypeError: add() missing 1 required positional argument: 'b'"),
        ("error", "raised NameError: name 'undefined_name' is not defined"),
    ]
    assert [o.passed for o in report.outcomes[:2]] == [True, True] and not report.passed
    assert report.stdout == "loaded\n" and report.network_isolated


async def test_checks_share_the_module_and_a_demo_block_does_not_run() -> None:
    code = ADD + "CACHE = {}\nif __name__ == '__main__':\n    raise SystemExit('demo ran')\n"
    report = await run_checks(
        code, ["CACHE.update(a=add(1, 2)) is None", "CACHE['a'] == 3"], sandbox=SANDBOX
    )
    assert report.passed, report


async def test_an_exception_in_the_code_fails_every_check_with_the_reason() -> None:
    report = await run_checks(
        "print('before')\nraise ValueError('boom')\n", ["f(1) == 1", "g()"], sandbox=SANDBOX
    )
    assert not report.loaded and report.error == "the code failed to run: ValueError: boom"
    assert [o.status for o in report.outcomes] == ["error", "error"]
    assert report.outcomes[0].detail == "not run: the code failed to run: ValueError: boom"
    assert report.stdout == "before\n"


async def test_an_infinite_loop_hits_the_timeout() -> None:
    report = await run_checks("while True:\n    pass\n", ["f() == 1"], timeout_s=1, sandbox=SANDBOX)
    assert report.limit == "timeout" and not report.loaded, report
    assert report.outcomes[0].status == "error"
    expected = "not run: timed out after 1s wall clock (the run was killed)"
    assert report.outcomes[0].detail == expected


async def test_a_loop_inside_a_check_hits_the_cpu_limit_after_earlier_checks_reported() -> None:
    sandbox = Sandbox(SandboxPolicy(cpu_s=1, wall_s=10.0))
    code = ADD + "def spin():\n    while True:\n        pass\n"
    report = await run_checks(code, ["add(1, 1) == 2", "spin()"], sandbox=sandbox)
    assert report.limit == "cpu", report
    assert report.loaded and report.outcomes[0].passed
    assert report.outcomes[1].detail == "not run: stopped by the CPU limit (1s)"


async def test_a_huge_allocation_is_a_memory_error() -> None:
    report = await run_checks("x = bytearray(8 * 1024**3)\n", ["f() == 1"], sandbox=SANDBOX)
    assert report.error == "the code failed to run: MemoryError", report


@pytest.fixture
def root_owned_dir() -> Iterator[Path]:
    """A root-owned 0755 dir the run can see but not write (not under /tmp, which the run
    replaces with its own)."""
    base = REPO / ".data"
    if any(base.resolve().is_relative_to(t) for t in ("/tmp", "/var/tmp", "/dev/shm")):
        base = Path("/var/lib/octollm-test")
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="pychecks-out-", dir=base))
    folder.chmod(0o755)
    yield folder
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def test_a_check_cannot_write_outside_its_work_dir(root_owned_dir: Path) -> None:
    assert os.geteuid() == 0, "the sandbox tests run as root, to drop to an unprivileged uid"
    target = root_owned_dir / "escaped.txt"
    marker = f"pychecks-left-behind-{os.getpid()}"
    code = "def write(path):\n    with open(path, 'w') as f:\n        return f.write('x')\n"
    checks = run_checks(
        code,
        [
            "write('inside.txt') == 1",  # the work dir is the run's own
            f"write({str(target)!r}) == 1",
            f"write('/tmp/{marker}') == 1",  # the run's private /tmp: gone with the run
        ],
        sandbox=SANDBOX,
    )
    report = asyncio.run(checks)
    inside, outside, tmp = report.outcomes
    assert inside.passed and tmp.passed, report
    assert outside.status == "error" and outside.detail.startswith("raised PermissionError")
    assert not target.exists()
    assert not Path("/tmp", marker).exists()


async def test_a_check_cannot_reach_the_network() -> None:
    code = (
        "import socket\n"
        "def reach(port):\n"
        "    with socket.create_connection(('127.0.0.1', port), timeout=2):\n"
        "        return True\n"
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        report = await run_checks(code, [f"reach({port})"], sandbox=SANDBOX)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the real port
    outcome = report.outcomes[0]
    assert outcome.status == "error" and "Network is unreachable" in outcome.detail, report
    assert report.network_isolated


async def test_output_is_capped_and_does_not_bury_the_reports() -> None:
    code = (
        ADD
        + "import os, sys\n"
        + "print('x' * 10_000_000)\n"
        + "print('e' * 100_000, file=sys.stderr)\n"
        + "os.write(1, b'y' * 1_000_000)\n"  # straight to fd 1, past the sandbox's cap
    )
    report = await run_checks(code, ["add(1, 1) == 2"], sandbox=SANDBOX)
    assert report.outcomes[0].passed, report.error
    assert report.output_truncated
    assert report.stdout == "x" * OUTPUT_CHARS
    assert len(report.stderr) == OUTPUT_CHARS and report.stderr.startswith("eee")


async def test_output_that_escapes_long_in_json_still_fits() -> None:
    code = ADD + "print('\\U0001f600' * 100_000)\nprint('\\ud800' * 100_000)\n"
    report = await run_checks(code, ["add(1, 1) == 2"], sandbox=SANDBOX)
    assert report.outcomes[0].passed, report.error
    assert report.stdout.startswith("\U0001f600") and len(report.stdout) == OUTPUT_CHARS


async def test_a_flood_into_the_report_channel_fails_closed() -> None:
    # Code that finds the harness's private copy of fd 1 and floods it past the sandbox's cap:
    # the reports after the flood are lost, so every check fails rather than passes.
    code = (
        "import os\n"
        "for fd in range(3, 10):\n"
        "    try:\n"
        "        os.write(fd, b'x' * 300_000)\n"
        "    except OSError:\n"
        "        pass\n"
        "def add(a, b):\n    return a + b\n"
    )
    report = await run_checks(code, ["add(1, 1) == 2"], sandbox=SANDBOX)
    assert not report.passed and report.outcomes[0].status == "error", report
    assert "cut off" in report.error


async def test_printed_or_written_report_lines_are_not_trusted() -> None:
    fake = '{"event": "check", "index": 0, "status": "passed", "detail": "forged"}'
    code = (
        "import os\n"
        f"print({fake!r})\n"
        f"os.write(1, {(fake + chr(10)).encode()!r})\n"
        "def add(a, b):\n    return 0\n"
    )
    report = await run_checks(code, ["add(2, 3) == 5"], sandbox=SANDBOX)
    assert report.outcomes[0].status == "failed"
    assert report.outcomes[0].detail == "add(2, 3) returned 0, expected 5"


async def test_concurrent_runs_keep_their_reports_apart() -> None:
    reports = await asyncio.gather(
        *(run_checks(f"N = {i}\n", [f"N == {i}"], sandbox=SANDBOX) for i in range(3))
    )
    assert all(r.passed for r in reports)


async def test_a_policy_that_cannot_run_python_refuses_before_running() -> None:
    sandbox = Sandbox(SandboxPolicy(allowed_commands=("echo",)))
    with pytest.raises(SandboxRefused, match="not allow-listed"):
        await run_checks(ADD, ["add(1, 1) == 2"], sandbox=sandbox)
