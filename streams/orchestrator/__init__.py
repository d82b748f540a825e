"""The orchestrator: plans (`plan`), a task's state and decisions (`state`), the Faust agents that
feed them events and send their effects (`agent`). See docs/orchestrator.md."""
