"""Log lines as text (`kv`) and as JSON (`--log-format json`): the same keys, the metrics' label names."""

from __future__ import annotations

import json
import logging

import pytest

from controller import logs


def formatted(msg: str, *args: object, exc: bool = False) -> dict[str, object]:
    record = logging.LogRecord("underlay.test", logging.INFO, __file__, 1, msg, args, None)
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys
            record.exc_info = sys.exc_info()
    document: dict[str, object] = json.loads(logs.JsonFormatter().format(record))
    return document


def test_a_kv_line_reads_the_same_as_text() -> None:
    line = logs.kv("allocated", pod="default/web 0", ip="198.18.0.5", n=3, gone=None)
    assert line == 'allocated pod="default/web 0" ip=198.18.0.5 n=3 gone=-'


def test_a_kv_line_in_json_keeps_its_keys_and_types() -> None:
    document = formatted(logs.kv("cni", command="ADD", pod="default/web 0", result=0, seconds=0.0123, ips=None))
    assert {key: document[key] for key in ("level", "logger", "event", "command", "pod", "result", "seconds", "ips")} == {
        "level": "info", "logger": "underlay.test", "event": "cni", "command": "ADD", "pod": "default/web 0",
        "result": 0, "seconds": 0.0123, "ips": None}
    assert str(document["time"]).endswith("+00:00")


@pytest.mark.parametrize("msg, args, expected", [
    ("switch=%016x event=converged deleted=%d added=%d", (1, 0, 6),
     {"switch": "0000000000000001", "event": "converged", "deleted": 0, "added": 6}),  # a dpid stays hex text
    ("event=error command=%s msg=%r", ("ADD", "it's \"bad\""), {"event": "error", "command": "ADD", "msg": "it's \"bad\""}),
    ("started epoch=%s api=%s", ("ab", "https://127.0.0.1:6680"), {"event": "started", "epoch": "ab", "api": "https://127.0.0.1:6680"}),
    ("%s: cannot send %d", ("10.0.0.1", 400), {"message": "10.0.0.1: cannot send 400"}),
])
def test_a_percent_formatted_key_value_line_is_taken_apart(msg: str, args: tuple[object, ...],
                                                            expected: dict[str, object]) -> None:
    document = formatted(msg, *args)
    assert {key: document[key] for key in expected} == expected
    assert "message" in document or "event" in document


def test_an_exception_goes_in_its_own_key() -> None:
    document = formatted(logs.kv("crash", switch="0000000000000001"), exc=True)
    assert document["event"] == "crash" and "RuntimeError: boom" in str(document["exception"])


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml': one of text, json"):
        logs.configure(logging.INFO, fmt="xml")
