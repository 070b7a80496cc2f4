"""What the REST API accepts: the JSON body and each field, checked before the service sees them.

Pure parsing, no HTTP: `controller.api` hands over bytes and dicts and gets values or a
`BadRequest` whose message starts with the field's path (`pods[3].ifname: ...`), which it answers
400. The rules for names are the outside world's, kept in one place (`cni.spec`) for the plugin,
the agent and this API alike: a container ID as the CNI spec has it, an interface name as the
kernel takes it, a namespace and a pod name as Kubernetes takes them. Free text (a pool name, a
sticky key, an address before the service parses it) must be valid Unicode without control
characters: a NUL or a newline in a name only ever breaks a log line or a store lookup later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from cni.spec import (CONTAINER_ID_RULE, IFNAME_RULE, NAMESPACE_RULE, POD_NAME_RULE, cut, shown, strict_json,
                      valid_container_id, valid_ifname, valid_namespace, valid_pod_name)
from controller.errors import BadRequest
from controller.ipam import parse_ip
from controller.service import PodRequest
from controller.store import Mode

Json = dict[str, Any]
MAX_DEPTH = 8  # the deepest body is a batch: {"pods": [{...}]}
MAX_TEXT = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def decode_body(raw: bytes) -> Json:
    """The request body: a JSON object, strictly decoded (see `cni.spec.strict_json`)."""
    if not raw.strip():
        raise BadRequest("body: empty, expected a JSON object")
    try:
        body = strict_json(raw, limit=len(raw), max_depth=MAX_DEPTH)
    except json.JSONDecodeError as err:
        raise BadRequest(f"body: not valid JSON ({err})") from None
    except ValueError as err:
        raise BadRequest(f"body: {err}") from None
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    return body


def text(body: Mapping[str, Any], name: str, *, limit: int = MAX_TEXT, at: str = "") -> str:
    """The required string field `name`: non-empty, at most `limit` characters, no control characters."""
    if name not in body:
        raise BadRequest(f"{at}{name}: missing")
    value = body[name]
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{at}{name}: expected a non-empty string, got {cut(json.dumps(value))}")
    if len(value) > limit:
        raise BadRequest(f"{at}{name}: longer than {limit} characters")
    if _CONTROL.search(value):
        raise BadRequest(f"{at}{name}: {shown(value)} contains a control character")
    return value


def optional(body: Json, name: str, *, at: str = "") -> str | None:
    return None if body.get(name) is None else text(body, name, at=at)


def _named(valid: Callable[[str], bool], what: str, rule: str) -> Callable[[str, str], str]:
    """A check that `value` is a name of some kind; the error quotes the rule it breaks."""

    def check(value: str, field: str) -> str:
        if not valid(value):
            raise BadRequest(f"{field}: {shown(value)} is not {what} ({rule})")
        return value

    return check


container_id = _named(valid_container_id, "a CNI container ID", CONTAINER_ID_RULE)
ifname = _named(valid_ifname, "a Linux interface name", IFNAME_RULE)
namespace = _named(valid_namespace, "a Kubernetes namespace", NAMESPACE_RULE)
pod_name = _named(valid_pod_name, "a Kubernetes pod name", POD_NAME_RULE)


def pod_request(body: Any, *, at: str = "") -> PodRequest:
    """A POST .../pods body; `at` prefixes field names in errors (`pods[3].ifname: ...`)."""
    if not isinstance(body, dict):
        raise BadRequest(f"{at.rstrip('.') or 'body'}: expected an object")
    mode = text(body, "mode", at=at)
    if mode not in {m.value for m in Mode}:
        raise BadRequest(f"{at}mode: {shown(mode)} is not one of macvlan, ipvlan")
    cid, name = text(body, "container_id", at=at), text(body, "ifname", at=at)
    return PodRequest(
        container_id=container_id(cid, f"{at}container_id"), ifname=ifname(name, f"{at}ifname"),
        namespace=namespace(text(body, "namespace", at=at), f"{at}namespace"),
        name=pod_name(text(body, "name", at=at), f"{at}name"),
        mode=Mode(mode), pool=optional(body, "pool", at=at), ip=optional(body, "ip", at=at),
        mac=optional(body, "mac", at=at), sticky=optional(body, "sticky", at=at),
        uid=optional(body, "uid", at=at), ips=addresses(body, "ips", at=at),
    )  # fmt: skip


def addresses(body: Json, name: str, *, at: str = "") -> tuple[str, ...]:
    """An optional list of requested addresses, at most one per family (dual stack), canonical."""
    value = body.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 2:
        raise BadRequest(f"{at}{name}: expected a list of at most two addresses (one per family), "
                         f"got {cut(json.dumps(value))}")
    parsed = tuple(parse_ip(text({f"[{index}]": item}, f"[{index}]", at=f"{at}{name}"), versions=(4, 6),
                            field_name=f"{at}{name}[{index}]") for index, item in enumerate(value))
    if len(parsed) == 2 and (":" in parsed[0]) == (":" in parsed[1]) and parsed[0] != parsed[1]:
        raise BadRequest(f"{at}{name}: two IPv{6 if ':' in parsed[0] else 4} addresses ({parsed[0]}, {parsed[1]}); "
                         "at most one per family")
    return parsed


def attachment_keys(body: Json) -> list[tuple[str, str]]:
    """A full-state sync's `pods`: the (container_id, ifname) of each attachment the node has."""
    listed = body.get("pods")
    if not isinstance(listed, list):
        raise BadRequest("pods: expected a list of {container_id, ifname}")
    keys = []
    for index, item in enumerate(listed):
        at = f"pods[{index}]."
        if not isinstance(item, dict):
            raise BadRequest(f"pods[{index}]: expected an object")
        keys.append((container_id(text(item, "container_id", at=at), f"{at}container_id"),
                     ifname(text(item, "ifname", at=at), f"{at}ifname")))
    return keys


def path_params(params: Mapping[str, str]) -> dict[str, str]:
    """Path segments as the client meant them: a WSGI server hands them over as Latin-1 (PEP 3333),
    the client (`urllib.parse.quote`) percent-encoded UTF-8."""
    decoded = {}
    for name, value in params.items():
        try:
            decoded[name] = value.encode("latin-1").decode()
        except UnicodeError:
            raise BadRequest(f"{name}: {shown(value)} in the path is not UTF-8") from None
    return decoded


def attachment_key(params: Mapping[str, str]) -> tuple[str, str]:
    """The (container_id, ifname) named by a path, under the same rules as in a body."""
    return (container_id(text(params, "container_id"), "container_id"), ifname(text(params, "ifname"), "ifname"))
