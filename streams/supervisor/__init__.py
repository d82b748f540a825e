"""Local service supervision: detached processes tracked by PID files, and the Kafka cluster."""

from octollm.supervisor.process import ManagedProcess, pid_alive, port_in_use, wait_until

__all__ = ["ManagedProcess", "pid_alive", "port_in_use", "wait_until"]
