"""MySQL client/server protocol: codec, per-client session, listener."""
