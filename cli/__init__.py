"""The `sqlxos` command line; wires the parts together at start-up."""
