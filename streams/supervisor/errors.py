"""The supervisor's one error type, in a module of its own so the CLI's entry point can catch it
without importing the whole dev stack."""


class InfraError(RuntimeError):
    """A problem the user can fix (missing tool, port taken, mismatched data dir).

    The CLI prints its first line (`octollm: error: …`) and exits 1; later lines (log tails)
    are shown at OCTO_LOG_LEVEL=DEBUG.
    """
