"""The wire: listeners, per-client sessions, upstream connections, the decision hook.

Bytes and sockets live here. SQL meaning is `sqlx.air`'s; decisions come from
whatever implements `sqlx.proxy.decision.Decider`.
"""
