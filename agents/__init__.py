"""The copilot: event bus, plan cache, reward and agents.

It implements the proxy's decision interface (`sqlx.proxy.decision.Decider`);
the command line wires it in at start-up.
"""
