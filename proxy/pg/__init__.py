"""PostgreSQL protocol 3.0: codec (sans-I/O), session state machine, upstream."""
