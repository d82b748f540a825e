"""The sandbox policy: the allow-list, file names and timeouts, refused before anything runs."""

from __future__ import annotations

import asyncio

import pytest

from octollm.sandbox import Sandbox, SandboxPolicy, SandboxRefused
from octollm.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["curl", "http://example.com"], "not allow-listed"),
        (["bash", "-c", "echo hi"], "not allow-listed"),
        (["/bin/bash"], "not allow-listed"),
        (["./main.py"], "relative command path"),
        ([], "non-empty"),
        (["echo", "x" * 70_000], "longer than"),
    ],
)
def test_unlisted_commands_are_refused_with_a_reason(argv: list[str], reason: str) -> None:
    with pytest.raises(SandboxRefused, match=reason):
        asyncio.run(Sandbox().run(argv))


def test_listed_names_and_their_paths_run() -> None:
    policy = SandboxPolicy()
    assert policy.resolve(["echo", "x"]) in ("/usr/bin/echo", "/bin/echo")
    r = asyncio.run(Sandbox(policy).run([policy.resolve(["echo"]), "hi"]))
    assert r.exit_code == 0 and r.stdout == "hi\n"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", ""])
def test_file_names_must_stay_in_the_work_dir(name: str) -> None:
    with pytest.raises(SandboxRefused, match="relative and stay"):
        asyncio.run(Sandbox().run_python("pass", files={name: "x"}))


def test_the_code_file_cannot_be_overwritten() -> None:
    with pytest.raises(SandboxRefused, match=r"main\.py"):
        asyncio.run(Sandbox().run_python("pass", files={"main.py": "x"}))


def test_timeouts_are_clamped_and_must_be_positive() -> None:
    policy = SandboxPolicy(wall_s=3, max_wall_s=20)
    assert policy.timeout(None) == 3 and policy.timeout(500) == 20 and policy.timeout(1.5) == 1.5
    with pytest.raises(SandboxRefused):
        policy.timeout(0)


def test_policy_from_settings() -> None:
    settings = Settings(
        bootstrap_servers="127.0.0.1:1",
        sandbox_allowed_commands=["python3"],
        sandbox_cpu_s=3,
        sandbox_memory_mb=128,
    )
    policy = SandboxPolicy.from_settings(settings)
    assert policy.allowed_commands == ("python3",)
    assert (policy.cpu_s, policy.memory_mb) == (3, 128)
    with pytest.raises(SandboxRefused):
        policy.resolve(["echo"])


def test_a_program_that_cannot_start_is_reported_not_raised() -> None:
    # A listed path that is not a program: the launcher's exec fails, and the result says so.
    policy = SandboxPolicy(allowed_commands=("/etc/hostname",))
    r = asyncio.run(Sandbox(policy).run(["/etc/hostname"]))
    assert r.exit_code == 125 and "sandbox: exec: OSError" in r.stderr, r
