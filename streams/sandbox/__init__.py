"""Run untrusted code or an allow-listed command in a contained child process.

One interface for every caller (the executor arm, `octollm exec`, and through `run_checks` the
judge's code criteria and the coder's tests):

    policy = SandboxPolicy.from_settings(settings)
    result = await Sandbox(policy).run_python(code, stdin="", timeout_s=None, files=None)
    result = await Sandbox(policy).run(argv, stdin="", timeout_s=None, files=None)
    report = await run_checks(code, ["add(2, 3) == 5"], sandbox=Sandbox(policy))

How the containment is built, and what it does not cover, is in docs/executor.md.
"""

from octollm.sandbox.policy import SandboxPolicy, SandboxRefused
from octollm.sandbox.pychecks import CheckOutcome, ChecksReport, PyCheck, run_checks
from octollm.sandbox.result import Limit, SandboxResult
from octollm.sandbox.runner import Sandbox

__all__ = [
    "CheckOutcome",
    "ChecksReport",
    "Limit",
    "PyCheck",
    "Sandbox",
    "SandboxPolicy",
    "SandboxRefused",
    "SandboxResult",
    "run_checks",
]
