"""Run untrusted code or an allow-listed command in a contained child process.

One interface for every caller (the executor arm, the coder arm's checks, `octollm exec`):

    policy = SandboxPolicy.from_settings(settings)
    result = await Sandbox(policy).run_python(code, stdin="", timeout_s=None, files=None)
    result = await Sandbox(policy).run(argv, stdin="", timeout_s=None, files=None)

How the containment is built, and what it does not cover, is in docs/executor.md.
"""

from octollm.sandbox.policy import SandboxPolicy, SandboxRefused
from octollm.sandbox.result import Limit, SandboxResult
from octollm.sandbox.runner import Sandbox

__all__ = ["Limit", "Sandbox", "SandboxPolicy", "SandboxRefused", "SandboxResult"]
