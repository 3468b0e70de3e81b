"""The session state machine, fed bytes from both sides (no sockets)."""

from __future__ import annotations

import pytest

from sqlx.proxy.decision import ALLOW, AllowAll, Decision, Outcome, Statement, Verdict
from sqlx.proxy.pg import codec
from sqlx.proxy.pg.codec import BE, FE, Auth
from sqlx.proxy.pg.session import (
    Close,
    ConnectUpstream,
    ForwardCancel,
    PgSession,
    ReplySSL,
    State,
)

PROXY_KEY = (4242, 777)


class Recorder:
    """A decider that denies statements containing 'forbidden', rewrites 'old'."""

    def __init__(self) -> None:
        self.seen: list[Statement] = []
        self.outcomes: list[Outcome] = []

    def decide(self, statement: Statement) -> Decision:
        self.seen.append(statement)
        if "forbidden" in statement.sql:
            return Decision(Verdict.DENY, reason="denied: forbidden")
        if "old" in statement.sql:
            return Decision(Verdict.REWRITE, sql=statement.sql.replace("old", "new"))
        return ALLOW

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def _session(decider=None, tls: bool = False) -> PgSession:
    return PgSession(decider or AllowAll(), key=PROXY_KEY, client_addr="10.0.0.1",
                     tls_available=tls, max_message_bytes=1 << 20,
                     max_held_batch_bytes=1 << 16)  # fmt: skip


def _ready(decider=None) -> PgSession:
    s = _session(decider)
    s.receive_client(codec.encode_startup({"user": "app", "database": "shop"}))
    s.upstream_connected()
    s.receive_server(
        codec.message(BE.AUTHENTICATION, b"\x00\x00\x00\x00")
        + codec.message(BE.PARAMETER_STATUS, b"server_version\x0016.1\x00")
        + codec.encode_backend_key(999, 123456)
        + codec.encode_ready_for_query(codec.TxStatus.IDLE)
    )
    assert s.state is State.READY
    s.out_client.clear()
    s.out_server.clear()
    s.actions.clear()
    return s


def _ready_for_query(status: bytes = b"I") -> bytes:
    return codec.encode_ready_for_query(status[0])


def test_startup_asks_for_an_upstream_with_the_clients_parameters() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app", "application_name": "web"}))
    (action,) = s.actions
    assert isinstance(action, ConnectUpstream)
    assert codec.parse_first_packet(action.startup).params == {
        "user": "app", "application_name": "web"}  # fmt: skip
    assert action.facts.database == "app" and action.facts.client_addr == "10.0.0.1"


def test_backend_key_is_replaced_by_the_proxys_own() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app"}))
    s.upstream_connected()
    s.receive_server(codec.encode_backend_key(999, 123456) + _ready_for_query())
    out = b"".join(s.out_client)
    assert codec.encode_backend_key(*PROXY_KEY) in out
    assert codec.encode_backend_key(999, 123456) not in out
    assert s.upstream_key == (999, 123456)


def test_channel_binding_is_never_offered_across_the_proxy() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app"}))
    s.upstream_connected()
    s.receive_server(codec.encode_sasl_mechanisms(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
    assert codec.read_sasl_mechanisms(b"".join(s.out_client)) == ["SCRAM-SHA-256"]


def test_ssl_request_with_trailing_plaintext_is_refused() -> None:
    s = _session(tls=True)
    s.receive_client(codec.encode_ssl_request() + codec.encode_startup({"user": "x"}))
    assert codec.read_error_fields(s.out_client[0])["C"] == "08P01"
    assert isinstance(s.actions[-1], Close) and s.state is State.CLOSED


@pytest.mark.parametrize("tls", [True, False])
def test_ssl_request_is_answered_per_configuration(tls: bool) -> None:
    s = _session(tls=tls)
    s.receive_client(codec.encode_ssl_request())
    assert s.actions == [ReplySSL(tls)]
    assert s.state is State.AWAIT_STARTUP


def test_cancel_request_is_forwarded_for_routing() -> None:
    s = _session()
    s.receive_client(codec.encode_cancel_request(1, 2))
    assert s.actions == [ForwardCancel(1, 2), Close("cancel request")]


def test_newer_minor_protocol_is_negotiated_down() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "a", "_pq_.x": "1"}, codec.PROTOCOL_3_0 | 2))
    neg = s.out_client[0]
    assert neg[0] == BE.NEGOTIATE_PROTOCOL_VERSION and b"_pq_.x" in neg
    (action,) = s.actions
    assert codec.parse_first_packet(action.startup).params == {"user": "a"}


def _marker(s: PgSession) -> str:
    """The denial marker the session sent upstream in place of a statement."""
    sent = b"".join(s.out_server)
    start = sent.index(b"sqlx_denied_")
    return sent[start : sent.index(b"\x00", start)].decode()


def _server_rejects(s: PgSession, status: bytes = b"I") -> None:
    """What PostgreSQL answers to the marker: a syntax error, then ReadyForQuery."""
    error = codec.encode_error("42601", f'syntax error at or near "{_marker(s)}"')
    s.out_server.clear()
    s.receive_server(error + _ready_for_query(status))


def test_query_sent_before_authentication_completes_waits_for_the_decider() -> None:
    decider = Recorder()
    s = _session(decider)
    s.receive_client(codec.encode_startup({"user": "app"}) + codec.encode_query("select forbidden"))
    s.upstream_connected()
    assert s.out_server == [] and decider.seen == []
    s.receive_server(codec.message(BE.AUTHENTICATION, b"\x00" * 4) + _ready_for_query())
    assert [st.sql for st in decider.seen] == ["select forbidden"]
    assert b"forbidden" not in b"".join(s.out_server) and _marker(s)


def test_allowed_query_is_forwarded_as_the_same_bytes() -> None:
    s = _ready()
    q = codec.encode_query("select 1")
    s.receive_client(q)
    assert s.out_server == [q]


def test_denied_query_reaches_the_server_only_as_a_failing_marker() -> None:
    decider = Recorder()
    s = _ready(decider)
    s.receive_client(codec.encode_query("select forbidden"))
    (sent,) = s.out_server
    assert sent[0] == FE.QUERY and b"forbidden" not in sent
    _server_rejects(s)
    err, rfq = s.out_client
    assert codec.read_error_fields(err) == {"S": "ERROR", "V": "ERROR", "C": "42501",
                                            "M": "denied: forbidden"}  # fmt: skip
    assert rfq == _ready_for_query()
    assert decider.outcomes[-1].error_sqlstate == "42501"
    assert s.idle


def test_denial_inside_a_transaction_leaves_it_failed_as_the_server_says() -> None:
    s = _ready(Recorder())
    s.receive_client(codec.encode_query("begin"))
    s.receive_server(codec.message(BE.COMMAND_COMPLETE, b"BEGIN\x00") + _ready_for_query(b"T"))
    s.out_client.clear()
    s.receive_client(codec.encode_query("select forbidden"))
    _server_rejects(s, status=b"E")
    assert s.out_client[-1] == _ready_for_query(b"E") and s.tx_status == ord("E")


def test_rewritten_query_is_reencoded() -> None:
    s = _ready(Recorder())
    s.receive_client(codec.encode_query("select old"))
    assert s.out_server == [codec.encode_query("select new")]


def _extended(sql: str, end: int = FE.SYNC) -> list[bytes]:
    return [
        codec.message(FE.PARSE, b"\x00" + sql.encode() + b"\x00\x00\x00"),
        codec.message(FE.BIND, b"\x00\x00" + b"\x00" * 6),
        codec.message(FE.EXECUTE, b"\x00\x00\x00\x00\x00"),
        codec.message(end),
    ]


def test_parse_bearing_batch_is_held_until_sync() -> None:
    s = _ready(Recorder())
    msgs = _extended("select 1")
    s.receive_client(b"".join(msgs[:3]))
    assert s.out_server == []
    s.receive_client(msgs[3])
    assert b"".join(s.out_server) == b"".join(msgs)


def test_denied_batch_sends_nothing_of_it_upstream() -> None:
    s = _ready(Recorder())
    ok = _extended("select 1")
    s.receive_client(b"".join(ok[:3] + _extended("select forbidden")))
    sent = b"".join(s.out_server)
    assert b"select" not in sent and b"forbidden" not in sent
    assert [m[0] for m in s.out_server] == [FE.PARSE, FE.SYNC]
    _server_rejects(s)
    assert [m[0] for m in s.out_client] == [BE.ERROR_RESPONSE, BE.READY_FOR_QUERY]
    assert codec.read_error_fields(s.out_client[0])["C"] == "42501"


def test_denied_flush_batch_lets_the_server_skip_to_sync() -> None:
    s = _ready(Recorder())
    s.receive_client(b"".join(_extended("select forbidden", FE.FLUSH)))
    assert [m[0] for m in s.out_server] == [FE.PARSE, FE.FLUSH]
    marker = _marker(s)
    s.out_server.clear()
    s.receive_server(codec.encode_error("42601", f'syntax error at or near "{marker}"'))
    assert codec.read_error_fields(s.out_client[0])["C"] == "42501"
    # The server now skips everything up to Sync, a Query included: one answer only.
    s.receive_client(codec.encode_query("select 2") + b"".join(_extended("select 3")))
    s.receive_server(_ready_for_query())
    assert s.idle


def test_denial_waits_behind_outstanding_server_responses() -> None:
    s = _ready(Recorder())
    s.receive_client(codec.encode_query("select 1") + codec.encode_query("select forbidden"))
    assert s.out_client == []
    assert s.out_server[0] == codec.encode_query("select 1")
    first = codec.message(BE.COMMAND_COMPLETE, b"SELECT 1\x00") + _ready_for_query()
    marker = _marker(s)
    s.receive_server(first + codec.encode_error("42601", f'at or near "{marker}"')
                     + _ready_for_query())  # fmt: skip
    tags = [m[0] for m in s.out_client]
    assert b"".join(s.out_client).startswith(first)
    assert tags[-2:] == [BE.ERROR_RESPONSE, BE.READY_FOR_QUERY]
    assert codec.read_error_fields(s.out_client[-2])["C"] == "42501"


def test_extended_copy_in_keeps_ready_for_query_accounting() -> None:
    s = _ready()
    s.receive_client(b"".join(_extended("copy t from stdin")))
    s.receive_server(codec.message(BE.PARSE_COMPLETE) + codec.message(BE.BIND_COMPLETE)
                     + codec.message(BE.COPY_IN_RESPONSE, b"\x00\x00\x00"))  # fmt: skip
    s.receive_client(codec.message(FE.COPY_DATA, b"1\n") + codec.message(FE.COPY_DONE)
                     + codec.message(FE.SYNC))  # fmt: skip
    assert not s.idle
    s.receive_server(codec.message(BE.COMMAND_COMPLETE, b"COPY 1\x00") + _ready_for_query())
    assert s.idle


def test_pipelined_query_after_auth_is_released_to_the_server() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app"}) + codec.encode_query("select 1"))
    s.upstream_connected()
    s.receive_server(codec.message(BE.AUTHENTICATION, b"\x00" * 4) + _ready_for_query())
    assert s.out_server == [codec.encode_query("select 1")]


def test_function_call_is_decided() -> None:
    class DenyCalls(Recorder):
        def decide(self, statement: Statement) -> Decision:
            self.seen.append(statement)
            if statement.function_oid == 1055:
                return Decision(Verdict.DENY, reason="no direct function calls")
            return ALLOW

    decider = DenyCalls()
    s = _ready(decider)
    call = codec.message(FE.FUNCTION_CALL, (1055).to_bytes(4, "big") + b"\x00\x00\x00\x00\x00\x00")
    s.receive_client(call)
    assert call not in s.out_server and decider.seen[-1].function_oid == 1055
    _server_rejects(s)
    assert codec.read_error_fields(s.out_client[0])["M"] == "no direct function calls"


def test_scram_channel_binding_refusal_gets_a_hint() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app"}))
    s.upstream_connected()
    s.receive_server(codec.encode_error("08P01", "SCRAM channel binding negotiation error",
                                        fatal=True))  # fmt: skip
    fields = codec.read_error_fields(s.out_client[0])
    assert fields["C"] == "08P01" and "channel_binding=disable" in fields["H"]


def test_too_much_data_before_authentication_is_refused() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app"}))
    s.receive_client(b"Q" + (1 << 21).to_bytes(4, "big") + b"x" * (1 << 20))
    s.receive_client(b"x" * (1 << 20))
    assert codec.read_error_fields(s.out_client[-1])["C"] == "08P01"
    assert s.state is State.CLOSED


def test_prepared_execution_without_parse_streams_through() -> None:
    s = _ready(Recorder())
    msgs = _extended("select 1")[1:]
    s.receive_client(b"".join(msgs))
    assert s.out_server == [b"".join(msgs)]


def test_transaction_status_and_idle_follow_ready_for_query() -> None:
    s = _ready()
    s.receive_client(codec.encode_query("begin"))
    assert not s.idle
    s.receive_server(_ready_for_query(b"T"))
    assert s.tx_status == ord("T") and not s.idle
    s.receive_client(codec.encode_query("commit"))
    s.receive_server(_ready_for_query(b"I"))
    assert s.idle


def test_unknown_frontend_message_closes_with_08p01() -> None:
    s = _ready()
    s.receive_client(b"z\x00\x00\x00\x04")
    assert codec.read_error_fields(s.out_client[0])["C"] == "08P01"
    assert s.state is State.CLOSED


def test_server_loss_reports_08006() -> None:
    s = _ready()
    s.server_lost()
    assert codec.read_error_fields(s.out_client[0])["C"] == "08006"


def test_server_refusal_during_auth_is_not_doubled() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app"}))
    s.upstream_connected()
    s.receive_server(codec.encode_error("28P01", "password authentication failed", fatal=True))
    s.server_lost()
    assert len(s.out_client) == 1 and s.state is State.CLOSED


def test_password_messages_are_relayed_during_auth() -> None:
    s = _session()
    s.receive_client(codec.encode_startup({"user": "app"}))
    s.upstream_connected()
    s.receive_server(codec.message(BE.AUTHENTICATION, (Auth.MD5_PASSWORD).to_bytes(4, "big")
                                   + b"salt"))  # fmt: skip
    pw = codec.message(FE.PASSWORD_MESSAGE, b"md5abc\x00")
    s.receive_client(pw)
    assert s.out_server == [pw]


def test_gssenc_request_is_declined_and_startup_continues() -> None:
    s = _session()
    gss = (8).to_bytes(4, "big") + codec.GSSENC_REQUEST_CODE.to_bytes(4, "big")
    s.receive_client(gss)
    assert s.out_client == [b"N"] and s.state is State.AWAIT_STARTUP
    s.receive_client(codec.encode_startup({"user": "app"}))
    assert isinstance(s.actions[-1], ConnectUpstream)


def test_function_call_is_counted_for_its_ready_for_query() -> None:
    s = _ready()
    call = codec.message(FE.FUNCTION_CALL, b"\x00\x00\x04\x1f\x00\x00\x00\x00\x00\x00")
    s.receive_client(call)
    assert s.out_server == [call] and not s.idle
    s.receive_server(codec.message(BE.FUNCTION_CALL_RESPONSE, b"\xff\xff\xff\xff")
                     + _ready_for_query())  # fmt: skip
    assert s.idle


def test_statements_carry_whether_the_server_reads_backslash_escapes() -> None:
    rec = Recorder()
    s = _ready(rec)
    s.receive_client(codec.encode_query("SELECT 1"))
    off = codec.message(BE.PARAMETER_STATUS, b"standard_conforming_strings\x00off\x00")
    s.receive_server(off + codec.encode_ready_for_query(codec.TxStatus.IDLE))
    assert off in b"".join(s.out_client)  # relayed as it came
    s.receive_client(codec.encode_query("SELECT 2"))
    on = codec.message(BE.PARAMETER_STATUS, b"standard_conforming_strings\x00on\x00")
    s.receive_server(on + codec.encode_ready_for_query(codec.TxStatus.IDLE))
    s.receive_client(codec.encode_query("SELECT 3"))
    assert [st.escapes for st in rec.seen] == [False, True, False]
    assert s.server_params["standard_conforming_strings"] == "on"
