"""controller.fields without HTTP: every malformed body or field is a BadRequest naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni.spec import CONTAINER_ID_RULE, NAMESPACE_RULE, POD_NAME_RULE
from controller import fields
from controller.errors import BadRequest
from controller.store import Mode

POD = {"container_id": "abc", "ifname": "eth0", "namespace": "default", "name": "web-0", "mode": "macvlan"}


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(BadRequest) as bad:
        call(*args, **kwargs)
    return str(bad.value)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[" * 60_000, "body: nested deeper than 8 levels"),  # issue 16: was a 500 (RecursionError)
    (b'{"a": [[[[[[[[]]]]]]]]}', "body: nested deeper than 8 levels"),
    (b"", "body: empty, expected a JSON object"),
    (b"{nope", "body: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    (b'{"a": "\xff"}', "body: not UTF-8: byte 0xff at offset 7 (invalid start byte)"),
    (b'{"container_id": "\\ud800"}', "body: string '\\ud800' is not valid Unicode (lone surrogate)"),
    (b'{"a": NaN}', "body: NaN is not a JSON value"),
    (b'{"a": 1e400}', "body: number 1e400 is out of range"),
    (b"[]", "body: expected a JSON object"),
])  # fmt: skip
def test_bodies_that_are_refused(raw: bytes, reason: str) -> None:
    assert refused(fields.decode_body, raw) == reason


def test_a_batch_body_is_deep_enough() -> None:
    body = {"pods": [{**POD, "pool": None}]}
    assert fields.decode_body(json.dumps(body).encode()) == body


@pytest.mark.parametrize(("change", "reason"), [
    ({"container_id": "\u0000"}, "container_id: '\\x00' contains a control character"),  # issue 16
    ({"container_id": " "}, f"container_id: ' ' is not a CNI container ID ({CONTAINER_ID_RULE})"),  # issue 16
    ({"container_id": "-x"}, f"container_id: '-x' is not a CNI container ID ({CONTAINER_ID_RULE})"),
    ({"container_id": "a" * 201}, "...(cut) is not a CNI container ID"),
    ({"namespace": "Default"}, f"namespace: 'Default' is not a Kubernetes namespace ({NAMESPACE_RULE})"),
    ({"name": "web_0"}, f"name: 'web_0' is not a Kubernetes pod name ({POD_NAME_RULE})"),
    ({"ifname": "eth%d"}, "ifname: 'eth%d' is not a Linux interface name"),
    ({"ifname": "é" * 8}, "ifname: 'éééééééé' is not a Linux interface name"),
    ({"mode": ["macvlan"]}, 'mode: expected a non-empty string, got ["macvlan"]'),
    ({"pool": "a\nb"}, "pool: 'a\\nb' contains a control character"),
    ({"sticky": {}}, "sticky: expected a non-empty string, got {}"),
    ({"ip": "x" * 2000}, "ip: longer than 1024 characters"),
    ({"mac": 5}, "mac: expected a non-empty string, got 5"),
])  # fmt: skip
def test_pod_fields_that_are_refused(change: dict[str, Any], reason: str) -> None:
    assert reason in refused(fields.pod_request, {**POD, **change})


def test_long_values_are_cut_in_messages() -> None:
    reason = refused(fields.pod_request, {**POD, "mode": ["x" * 10_000]})
    assert len(reason) < 120 and reason.endswith("...(cut)")


def test_a_valid_pod_request() -> None:
    request = fields.pod_request({**POD, "pool": None, "ip": "198.18.0.5", "sticky": "default/web-0"})
    assert (request.key, request.mode, request.ip, request.sticky) == (("abc", "eth0"), Mode.MACVLAN, "198.18.0.5",
                                                                       "default/web-0")


def test_sync_lists_are_checked_item_by_item() -> None:
    assert fields.attachment_keys({"pods": [{"container_id": "a", "ifname": "eth0"}]}) == [("a", "eth0")]
    assert refused(fields.attachment_keys, {"pods": [{"container_id": "a", "ifname": "eth0"}, {"container_id": "b"}]}) \
        == "pods[1].ifname: missing"
    assert refused(fields.attachment_keys, {"pods": [{"container_id": " ", "ifname": "eth0"}]}).startswith(
        "pods[0].container_id: ' ' is not a CNI container ID")


def test_path_segments_are_utf8_under_latin1() -> None:
    """PEP 3333 hands paths over as Latin-1; the agent percent-encoded UTF-8 (`é` is %C3%A9)."""
    assert fields.path_params({"node": "n1", "ifname": "Ã©th0"}) == {"node": "n1", "ifname": "éth0"}
    assert refused(fields.path_params, {"node": "n\xff"}) == "node: 'nÿ' in the path is not UTF-8"
    assert refused(fields.attachment_key, {"container_id": "\x00", "ifname": "eth0"}).startswith("container_id:")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)))
def test_any_json_body_is_a_request_or_a_bad_request(value: Any) -> None:
    try:
        fields.pod_request(fields.decode_body(json.dumps(value).encode()))
    except BadRequest as bad:
        assert str(bad).split(":")[0]
