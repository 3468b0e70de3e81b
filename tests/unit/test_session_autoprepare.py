"""Auto-prepare in the session state machine, fed bytes from both sides (no sockets).

A decider hands every `SELECT ...` a `Prepared`; the tests check what goes to
the server (probe, then Bind/Execute), and that the client only ever sees what
the Query itself would have got.
"""

from __future__ import annotations

import struct

from sqlx.proxy.decision import ALLOW, Decision, Outcome, Prepared, Statement, Verdict
from sqlx.proxy.pg import codec
from sqlx.proxy.pg.codec import BE, FE, TxStatus
from sqlx.proxy.pg.session import PgSession

QUERY = "SELECT v FROM t WHERE id = 7"
PREPARED = Prepared("sqlx_ap_1", "SELECT v FROM t WHERE id = $1", (23,), ("7",),
                    ((27, 28),), (0,))  # fmt: skip
ROW_DESCRIPTION = codec.message(
    BE.ROW_DESCRIPTION,
    struct.pack("!H", 1) + b"v\x00" + struct.pack("!IhIhih", 16384, 2, 25, -1, -1, 0),
)
ANSWER = (ROW_DESCRIPTION + codec.message(BE.DATA_ROW, struct.pack("!Hi", 1, 1) + b"x")
          + codec.encode_command_complete("SELECT 1"))  # fmt: skip


class Preparing:
    def __init__(self) -> None:
        self.refused: list[tuple[str, str]] = []
        self.outcomes: list[Outcome] = []

    def decide(self, statement: Statement) -> Decision:
        if statement.sql.startswith("SELECT"):
            return Decision(Verdict.ALLOW, prepared=PREPARED)
        return ALLOW

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def unpreparable(self, name: str, reason: str) -> None:
        self.refused.append((name, reason))


def _ready(decider: Preparing) -> PgSession:
    s = PgSession(decider, key=(1, 2), client_addr="10.0.0.1", tls_available=False,
                  max_message_bytes=1 << 20, max_held_batch_bytes=1 << 16,
                  observe_all=True, prepared_max=8)  # fmt: skip
    s.receive_client(codec.encode_startup({"user": "app", "database": "shop"}))
    s.upstream_connected()
    s.receive_server(codec.message(BE.AUTHENTICATION, b"\x00\x00\x00\x00")
                     + codec.encode_ready_for_query(TxStatus.IDLE))  # fmt: skip
    s.out_client.clear()
    s.out_server.clear()
    return s


def _tags(data: bytes) -> list[str]:
    tags, pos = [], 0
    while pos < len(data):
        tags.append(chr(data[pos]))
        pos += 1 + struct.unpack_from("!I", data, pos + 1)[0]
    return tags


def _probe_answer(description: bytes = ROW_DESCRIPTION) -> bytes:
    return (codec.message(BE.CLOSE_COMPLETE) + codec.message(BE.PARSE_COMPLETE)
            + codec.message(BE.PARAMETER_DESCRIPTION, struct.pack("!HI", 1, 23))
            + description + codec.encode_ready_for_query(TxStatus.IDLE))  # fmt: skip


def _query(s: PgSession) -> bytes:
    s.receive_client(codec.encode_query(QUERY))
    sent = b"".join(s.out_server)
    s.out_server.clear()
    return sent


def _answer(s: PgSession, data: bytes) -> bytes:
    s.receive_server(data)
    got = b"".join(s.out_client)
    s.out_client.clear()
    return got


def test_a_probe_then_bind_execute_and_the_client_sees_only_the_querys_answer() -> None:
    decider = Preparing()
    s = _ready(decider)
    sent = _query(s)
    # Close, Parse, Describe and Sync of the probe, then the Query as it came.
    assert _tags(sent) == ["C", "P", "D", "S", "Q"]
    assert sent.endswith(codec.encode_query(QUERY))
    plain = ANSWER + codec.encode_ready_for_query(TxStatus.IDLE)
    assert _answer(s, _probe_answer() + plain) == plain
    sent = _query(s)
    assert _tags(sent) == ["B", "D", "E", "S"]
    assert b"sqlx_ap_1\x00" in sent and b"7" in sent
    prepared_answer = codec.message(BE.BIND_COMPLETE) + ANSWER
    assert _answer(s, prepared_answer + codec.encode_ready_for_query(TxStatus.IDLE)) == plain
    assert [o.rows for o in decider.outcomes] == [1, 1]
    assert decider.refused == []


def test_a_probe_the_server_refuses_is_hidden_and_reported() -> None:
    decider = Preparing()
    s = _ready(decider)
    _query(s)
    refusal = (codec.message(BE.CLOSE_COMPLETE) + codec.encode_error("42P18", "no type")
               + codec.encode_ready_for_query(TxStatus.IDLE))  # fmt: skip
    plain = ANSWER + codec.encode_ready_for_query(TxStatus.IDLE)
    assert _answer(s, refusal + plain) == plain
    assert decider.refused and decider.refused[0][0] == "sqlx_ap_1"
    assert _tags(_query(s)) == ["C", "P", "D", "S", "Q"]  # this session probes again


def test_a_description_that_differs_is_never_used() -> None:
    decider = Preparing()
    s = _ready(decider)
    _query(s)
    other = ROW_DESCRIPTION.replace(struct.pack("!I", 25), struct.pack("!I", 1043))
    plain = ANSWER + codec.encode_ready_for_query(TxStatus.IDLE)
    assert _answer(s, _probe_answer(other) + plain) == plain
    assert decider.refused == [("sqlx_ap_1", "its result columns would differ")]


def test_a_probe_inside_a_transaction_block_is_wrapped_in_a_savepoint() -> None:
    decider = Preparing()
    s = _ready(decider)
    s.receive_client(codec.encode_query("BEGIN"))
    s.out_server.clear()
    _answer(s, codec.encode_command_complete("BEGIN")
            + codec.encode_ready_for_query(TxStatus.IN_TRANSACTION))  # fmt: skip
    sent = _query(s)
    assert _tags(sent) == ["Q", "C", "P", "D", "S", "Q", "Q"]
    assert b"SAVEPOINT sqlx_autoprepare" in sent and b"ROLLBACK TO SAVEPOINT" in sent
    t = TxStatus.IN_TRANSACTION
    hidden = (codec.encode_command_complete("SAVEPOINT") + codec.encode_ready_for_query(t)
              + codec.message(BE.CLOSE_COMPLETE) + codec.encode_error("42703", "no column")
              + codec.encode_ready_for_query(TxStatus.FAILED)
              + codec.encode_command_complete("ROLLBACK") + codec.encode_command_complete("RELEASE")
              + codec.encode_ready_for_query(t))  # fmt: skip
    plain = ANSWER + codec.encode_ready_for_query(t)
    assert _answer(s, hidden + plain) == plain
    assert s.tx_status == t


def test_a_parameters_input_error_points_at_the_literal() -> None:
    s = _ready(Preparing())
    _query(s)
    _answer(s, _probe_answer() + ANSWER + codec.encode_ready_for_query(TxStatus.IDLE))
    _query(s)
    error = codec.encode_error_fields({
        "S": "ERROR", "C": "22P02", "M": 'invalid input syntax for type integer: "x"',
        "W": "unnamed portal parameter $1 = '...'"})  # fmt: skip
    got = _answer(s, error + codec.encode_ready_for_query(TxStatus.IDLE))
    fields = codec.read_error_fields(got)
    assert fields["P"] == "28" and "W" not in fields and fields["C"] == "22P02"
    assert _tags(got) == ["E", "Z"]


def test_a_stale_statement_outside_a_transaction_runs_again_as_it_came() -> None:
    decider = Preparing()
    s = _ready(decider)
    _query(s)
    _answer(s, _probe_answer() + ANSWER + codec.encode_ready_for_query(TxStatus.IDLE))
    _query(s)
    stale = codec.encode_error("0A000", "cached plan must not change result type")
    s.receive_server(stale + codec.encode_ready_for_query(TxStatus.IDLE))
    assert s.out_client == []
    assert b"".join(s.out_server) == codec.encode_query(QUERY)  # sent again, plainly
    s.out_server.clear()
    plain = ANSWER + codec.encode_ready_for_query(TxStatus.IDLE)
    assert _answer(s, plain) == plain
    assert decider.outcomes[-1].error_sqlstate is None
    assert _tags(_query(s)) == ["C", "P", "D", "S", "Q"]  # probed again


def test_discard_all_forgets_the_prepared_statements() -> None:
    s = _ready(Preparing())
    _query(s)
    _answer(s, _probe_answer() + ANSWER + codec.encode_ready_for_query(TxStatus.IDLE))
    s.receive_client(codec.encode_query("DISCARD ALL"))
    s.out_server.clear()
    _answer(s, codec.encode_command_complete("DISCARD ALL")
            + codec.encode_ready_for_query(TxStatus.IDLE))  # fmt: skip
    assert _tags(_query(s))[:2] == ["C", "P"]


def test_a_pipelined_query_is_forwarded_as_it_came() -> None:
    s = _ready(Preparing())
    s.receive_client(codec.encode_query("BEGIN") + codec.encode_query(QUERY))
    assert b"".join(s.out_server) == codec.encode_query("BEGIN") + codec.encode_query(QUERY)


def test_an_open_extended_batch_is_never_closed_by_the_proxy() -> None:
    s = _ready(Preparing())
    s.receive_client(codec.encode_unnamed_parse("SELECT 1"))
    s.out_server.clear()
    sent = _query(s)
    assert FE.SYNC not in [ord(t) for t in _tags(sent)]


def test_the_servers_own_news_in_a_probe_still_reach_the_client() -> None:
    s = _ready(Preparing())
    _query(s)
    news = codec.message(
        BE.PARAMETER_STATUS, b"standard_conforming_strings\x00off\x00"
    ) + codec.message(BE.NOTIFICATION_RESPONSE, struct.pack("!I", 9) + b"ch\x00hi\x00")
    got = _answer(s, news + _probe_answer())
    assert got == news
    assert s.server_params["standard_conforming_strings"] == "off"
