"""cni.spec on hostile input (no root, no agent): strict JSON, the name rules, and `respond`, which
must turn every call, however malformed, into a CNI error with a specific code, never raise."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cni import plugin, spec
from cni.spec import (BAD_ENV, DECODE_FAILURE, INVALID_CONFIG, MAX_CONFIG, MAX_DEPTH, CniError, parse_args,
                      parse_config, respond, strict_json, valid_container_id, valid_namespace, valid_pod_name,
                      validate_config)

BASE = {"cniVersion": "1.0.0", "name": "underlay", "type": "underlay"}
# Codes the spec defines and ours; INTERNAL (100) is missing on purpose: a malformed call must be
# classified, an internal error means the spec code itself failed on it.
CLASSIFIED = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 101, 102}


def decode_failure(raw: bytes) -> CniError:
    with pytest.raises(CniError) as failed:
        parse_config(raw)
    assert failed.value.code == DECODE_FAILURE
    return failed.value


@pytest.mark.parametrize(("raw", "details"), [
    (b"{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"[" * 60_000, f"nested deeper than {MAX_DEPTH} levels"),  # issue 16: RecursionError
    (b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", f"nested deeper than {MAX_DEPTH} levels"),
    (b'{"a": "\xff"}', "not UTF-8: byte 0xff at offset 7 (invalid start byte)"),
    (b'\xff\xfe{\x00}\x00', "not UTF-8: byte 0xff at offset 0 (invalid start byte)"),  # UTF-16 is not guessed
    (b'{"a": "\\ud800"}', "string '\\ud800' is not valid Unicode (lone surrogate)"),
    (b'{"\\udfff": 1}', "string '\\udfff' is not valid Unicode (lone surrogate)"),
    (b'{"mtu": NaN}', "NaN is not a JSON value"),
    (b'{"mtu": -Infinity}', "-Infinity is not a JSON value"),
    (b'{"mtu": 1e999}', "number 1e999 is out of range"),
    (b'{"mtu": ' + b"9" * 5000 + b"}", "integer of 5000 digits is out of range"),
    (b"{" + b" " * MAX_CONFIG, f"{MAX_CONFIG + 1} bytes, more than the limit of {MAX_CONFIG}"),
])  # fmt: skip
def test_undecodable_configs_are_code_6_saying_why(raw: bytes, details: str) -> None:
    assert decode_failure(raw).details == details


def test_nesting_up_to_the_limit_decodes() -> None:
    deepest = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"  # MAX_DEPTH containers
    value = strict_json(deepest)["a"]
    for _ in range(MAX_DEPTH - 2):
        value = value[0]
    assert value == []


def test_empty_stdin_says_so() -> None:
    assert decode_failure(b" \n").msg == "no network configuration on stdin"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_strict_json_reads_what_json_writes(value: object) -> None:
    assert strict_json(json.dumps(value).encode()) == value
    assert strict_json(json.dumps(value, ensure_ascii=False).encode()) == value


@given(st.binary(max_size=200))
def test_strict_json_raises_only_value_error(raw: bytes) -> None:
    try:
        strict_json(raw)
    except ValueError:
        pass


@pytest.mark.parametrize(("value", "valid"), [
    ("c1", True), ("0" * 64, True), ("A.b_c-d", True), ("a" * 200, True),
    ("", False), (" ", False), ("\x00", False), ("-x", False), ("_x", False), (".x", False), ("a/b", False),
    ("a b", False), ("é", False), ("a\n", False), ("a" * 201, False),
])  # fmt: skip
def test_container_ids_as_the_cni_spec_has_them(value: str, valid: bool) -> None:
    assert valid_container_id(value) is valid


# Kubernetes' own cases for IsDNS1123Label / IsDNS1123Subdomain (apimachinery validation tests).
@pytest.mark.parametrize(("value", "valid"), [
    ("a", True), ("ab", True), ("abc", True), ("a1", True), ("a-1", True), ("a--1--2--b", True), ("0", True),
    ("01", True), ("a" * 63, True), ("", False), ("A", False), ("ABC", False), ("aBc", False), ("A1", False),
    ("a-1-", False), ("-a", False), ("a-", False), ("a_1", False), ("a.1", False), ("a b", False), ("a" * 64, False),
])  # fmt: skip
def test_namespaces_as_kubernetes_has_them(value: str, valid: bool) -> None:
    assert valid_namespace(value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("a", True), ("a.b.c", True), ("1.2.3", True), ("a-1.b-2", True), ("web-0", True),
    ("a" * 253, True), ("a." * 126 + "a", True),
    ("", False), ("A", False), ("a..b", False), (".a", False), ("a.", False), ("a.-b", False), ("a_b", False),
    ("a" * 254, False), ("web 0", False), ("\x00", False),
])  # fmt: skip
def test_pod_names_as_kubernetes_has_them(value: str, valid: bool) -> None:
    assert valid_pod_name(value) is valid


def test_kubernetes_names_in_cni_args_are_bad_args() -> None:
    with pytest.raises(CniError) as bad:
        parse_args("K8S_POD_NAMESPACE=Default;K8S_POD_NAME=web-0")
    assert (bad.value.code, bad.value.msg) == (BAD_ENV, "CNI_ARGS: K8S_POD_NAMESPACE='Default' is not a Kubernetes name")


@pytest.mark.parametrize(("config", "command", "msg"), [
    (dict(BASE, name="a b"), "ADD", "invalid network name 'a b'"),
    (dict(BASE, prevResult=[]), "ADD", "prevResult must be an object, not []"),
    (dict(BASE, prevResult={"ips": [5]}), "CHECK", "prevResult.ips[0] must be an object, not 5"),
    (dict(BASE, prevResult={"ips": [{}]}), "ADD", "prevResult.ips[0].address is missing"),
    (dict(BASE, prevResult={"ips": [{"address": "198.18.0.5/24", "interface": "0"}]}), "ADD",
     "prevResult.ips[0].interface must be a number, not '0'"),
    (dict(BASE, prevResult={"ips": [{"address": "198.18.0.5/24", "interface": True}]}), "ADD",
     "prevResult.ips[0].interface must be a number, not True"),
    (dict(BASE, prevResult={"routes": [{"dst": 1}]}), "ADD", "prevResult.routes[0].dst must be a string, not 1"),
    (dict(BASE, runtimeConfig={"ips": "198.18.0.5"}), "ADD", "runtimeConfig.ips must be a list, not '198.18.0.5'"),
    (dict(BASE, runtimeConfig={"mac": 5}), "ADD", "runtimeConfig.mac must be a string, not 5"),
    (dict(BASE, **{"cni.dev/valid-attachments": [1]}), "GC", "cni.dev/valid-attachments[0] must be an object, not 1"),
    (dict(BASE, pool=["a"]), "ADD", "pool must be a string, not ['a']"),
    (dict(BASE, mode="x" * 1000), "ADD", f"unknown mode {repr('x' * 1000)[:72]}...(cut)"),
    (dict(BASE, serviceCIDR="10.96.0.0/12"), "ADD", "serviceCIDR must be a list of networks, not '10.96.0.0/12'"),
    (dict(BASE, serviceCIDR=["192.0.2.0/24", "192.0.2.1/24"]), "ADD", "serviceCIDR[1]: '192.0.2.1/24' is not a network"),
    (dict(BASE, serviceCIDR=["192.0.2.7"]), "ADD", "serviceCIDR[0]: '192.0.2.7' is not a network"),
    (dict(BASE, serviceCIDR=[24]), "ADD", "serviceCIDR[0]: 24 is not a network"),
])  # fmt: skip
def test_config_shapes_the_agent_reads_are_checked(config: dict, command: str, msg: str) -> None:
    with pytest.raises(CniError) as invalid:
        validate_config(config, command)
    assert (invalid.value.code, invalid.value.msg) == (INVALID_CONFIG, msg)


def test_service_ranges_of_both_families_are_valid() -> None:
    validate_config(dict(BASE, serviceCIDR=["192.0.2.0/24", "fd00:96::/112"]), "ADD")


def test_a_del_does_not_fail_on_a_prev_result_it_does_not_read() -> None:
    validate_config(dict(BASE, prevResult="garbage", runtimeConfig=[]), "DEL")


def test_env_values_that_were_not_utf8_are_shown_as_bytes() -> None:
    with pytest.raises(CniError) as bad:
        spec.parse_env({"CNI_CONTAINERID": "c1", "CNI_IFNAME": "a\udca0", "CNI_PATH": "/x"}, "DEL")
    assert bad.value.msg == "invalid CNI_IFNAME b'a\\xa0'"


def test_the_plugin_reads_one_byte_past_the_config_limit() -> None:
    assert plugin.MAX_STDIN == MAX_CONFIG + 1 and plugin.MAX_REQUEST > plugin.MAX_STDIN


def no_agent(*_: object) -> None:  # as the agent's verbs and the IPAM plugin are called
    raise CniError(11, "node agent not reachable at /nonexistent")


def agent_that_succeeds(*_: object) -> dict:
    """An agent whose verbs all work: ADD's result is then merged with prevResult and formatted."""
    return RESULT


ENV_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
VALID_ENV = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
             "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"}
# A runtime's environment for some command with up to two variables replaced by any text or left out
# (text from a non-UTF-8 environment arrives surrogate-escaped, as the agent decodes it).
ENV = st.builds(
    lambda command, changes: {k: v for k, v in {**VALID_ENV, "CNI_COMMAND": command, **changes}.items() if v is not None},
    st.sampled_from(spec.COMMANDS),
    st.just({}) | st.dictionaries(
        st.sampled_from([*VALID_ENV, "CNI_COMMAND"]),
        st.none() | ENV_TEXT | st.binary(max_size=8).map(lambda b: b.decode(errors="surrogateescape")), max_size=2),
)  # fmt: skip
RESULT = {"interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/proc/self/ns/net"}],
          "ips": [{"address": "198.18.0.100/24", "interface": 0, "gateway": "198.18.0.1"}],
          "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}], "dns": {}}
# For each key the agent reads: values it takes (so that calls get past validation) besides any JSON.
PLAUSIBLE = {
    "cniVersion": list(spec.SUPPORTED_VERSIONS), "name": ["underlay"], "type": ["underlay"],
    "mode": ["macvlan", "ipvlan"], "macvlanMode": ["bridge"], "ipvlanMode": ["l2"], "mtu": [1500],
    "master": ["eth0"], "agentSocket": ["/nonexistent"], "pool": ["default"], "ipam": [{}, {"type": "host-local"}],
    "runtimeConfig": [{"ips": ["198.18.0.5/24"], "mac": "02:00:00:00:00:05"}], "prevResult": [RESULT, {}],
    "cni.dev/valid-attachments": [[{"containerID": "c1", "ifname": "eth0"}]], "cni.dev/attachments": [[]],
}  # fmt: skip
CHANGE = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
    lambda key: st.tuples(st.just(key), st.sampled_from([None, *PLAUSIBLE[key]]) | JSON_VALUES))
# Almost valid configs (a real one with up to three keys set to what the agent reads or to any JSON),
# and any bytes at all.
CONFIGS = st.lists(CHANGE, max_size=3).map(
    lambda changes: json.dumps({"cniVersion": "1.1.0", "name": "underlay", "type": "underlay", **dict(changes)}).encode()
) | st.binary(max_size=100)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(ENV, CONFIGS, st.sampled_from([no_agent, agent_that_succeeds]))
@example({**VALID_ENV, "CNI_COMMAND": "ADD"}, b'{"cniVersion": "1.1.0", "name": "n", "type": "t", "ipam": null}',
         agent_that_succeeds)
def test_every_call_gets_one_classified_answer(env: dict, raw: bytes, agent) -> None:
    status, stdout = respond(env, raw, agent=agent, ipam=agent)
    answer = json.loads(stdout) if stdout else None
    if status == 0:
        assert agent is agent_that_succeeds or env.get("CNI_COMMAND") == "VERSION", answer
        assert answer is None or "code" not in answer
        return
    assert status == 1 and stdout.endswith(b"\n") and stdout.count(b"\n") == 1
    assert answer["code"] in CLASSIFIED, answer
    assert isinstance(answer["msg"], str) and answer["msg"]
    assert answer["cniVersion"] in spec.SUPPORTED_VERSIONS


def test_respond_survives_a_failing_agent() -> None:
    def broken(request: dict) -> None:
        raise RecursionError("deep")

    status, stdout = respond({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/x"},
                             json.dumps(BASE).encode(), agent=broken, ipam=broken)
    assert (status, json.loads(stdout)["code"], json.loads(stdout)["details"]) == (1, 100, "RecursionError: deep")
