"""The `octollm` command line: one module per command group."""
