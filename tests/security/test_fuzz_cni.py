"""A hostile or broken runtime against the CNI plugin: random environments (bytes, not always UTF-8)
and stdin (almost valid configs, any JSON, any bytes, deep nesting), the plugin executed as a runtime
executes it, both builds (the native forwarder, and the Python plugin alone), with no agent and
through a real agent; and random requests straight to the agent's socket.

The property, from the CNI spec: stdout is exactly one JSON object, an error carries a `code` and a
`msg` (and the code is a specific one: 100, ours for "internal error", means a case nobody handled),
exit status 1; nothing on stderr, so never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni import install, plugin
from cni.spec import COMMANDS, MAX_CONFIG, MAX_DEPTH, SUPPORTED_VERSIONS

PLUGINS = pytest.mark.parametrize("build", ["underlay", "underlay.py"], ids=["native forwarder", "python plugin"])
NO_AGENT = "/nonexistent/underlay-agent.sock"
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 101, 102}  # the spec's and ours, without 100 (internal error)
FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def run(binary: Path, env: dict[bytes, bytes], stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    """As a runtime runs a plugin; `stdin=None`: with its stdin closed."""
    env = {b"PATH": b"/usr/sbin:/usr/bin:/sbin:/bin", **env}
    if stdin is None:
        return subprocess.run([str(binary)], stdin=subprocess.DEVNULL, env=env, capture_output=True, timeout=60,
                              preexec_fn=lambda: os.close(0))
    return subprocess.run([str(binary)], input=stdin, env=env, capture_output=True, timeout=60)


def answer_of(call: subprocess.CompletedProcess[bytes], env: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The property for one call; its stdout's JSON (None when a verb succeeded with no output)."""
    assert call.stderr == b"", call.stderr.decode(errors="replace")
    if env.get(b"CNI_COMMAND") == b"VERSION":
        assert call.returncode == 0 and json.loads(call.stdout)["cniVersion"] == "1.1.0", call
        return json.loads(call.stdout)
    if call.returncode == 0:  # a call that got through to a real agent: a result, or nothing
        return json.loads(call.stdout) if call.stdout else None
    assert call.returncode == 1, call
    assert call.stdout.endswith(b"\n") and call.stdout.count(b"\n") == 1, call.stdout
    answer = json.loads(call.stdout)
    assert isinstance(answer, dict) and answer["cniVersion"] in SUPPORTED_VERSIONS, answer
    assert answer["code"] in SPEC_CODES and isinstance(answer["msg"], str) and answer["msg"], answer
    return answer


@pytest.fixture(scope="module", autouse=True)
def no_agent_at_the_default_socket() -> None:
    """Unreadable configs go to the default socket: the fuzzer must not talk to a live agent there."""
    if os.path.exists(plugin.DEFAULT_SOCKET):
        pytest.fail(f"a node agent listens at {plugin.DEFAULT_SOCKET}: stop it, the fuzzer would send to it",
                    pytrace=False)


RAW_TEXT = st.binary(max_size=24).filter(lambda b: b"\0" not in b)  # an environment value: any bytes but NUL
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
CONFIG_KEYS = ["cniVersion", "name", "type", "mode", "macvlanMode", "ipvlanMode", "mtu", "master", "pool", "ipam",
               "runtimeConfig", "prevResult", "cni.dev/valid-attachments"]


def environments(netns: str) -> st.SearchStrategy[dict[bytes, bytes]]:
    """A runtime's environment for any command, with up to two variables replaced by any bytes or
    left out."""
    valid = {b"CNI_CONTAINERID": b"fuzz1", b"CNI_NETNS": netns.encode(), b"CNI_IFNAME": b"eth0",
             b"CNI_PATH": b"/opt/cni/bin", b"CNI_ARGS": b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"}
    changes = st.dictionaries(st.sampled_from([*valid, b"CNI_COMMAND"]), st.none() | RAW_TEXT, max_size=2)
    return st.builds(
        lambda command, changed: {k: v for k, v in {**valid, b"CNI_COMMAND": command, **changed}.items() if v is not None},
        st.sampled_from([c.encode() for c in COMMANDS]), changed=changes)  # fmt: skip


def stdins(agent_socket: str) -> st.SearchStrategy[bytes]:
    """Almost valid configs for the agent at `agent_socket` (up to three keys set to any JSON), any
    JSON, deep nesting, any bytes."""
    almost = st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), JSON), max_size=3).map(
        lambda changes: json.dumps({"cniVersion": "1.1.0", "name": "fuzz", "type": "underlay",
                                    "agentSocket": agent_socket, **dict(changes)}).encode())
    nested = st.integers(1, 100_000).map(lambda depth: b'{"agentSocket": "%s", "a": ' % agent_socket.encode() + b"[" * depth)
    return st.one_of(almost, JSON.map(lambda v: json.dumps(v).encode()), nested, st.binary(max_size=120))


@PLUGINS
@FUZZ
@given(data=st.data())
def test_without_an_agent_every_call_gets_one_cni_error(cni_bin: Path, build: str, data: st.DataObject) -> None:
    env = data.draw(environments("/proc/self/ns/net"), label="env")
    stdin = data.draw(stdins(NO_AGENT), label="stdin")
    answer_of(run(cni_bin / build, env, stdin), env)


@PLUGINS
def test_through_a_real_agent_every_call_gets_one_cni_error(make_node, pods, build: str) -> None:
    """The agent's socket server and the spec code in the agent, reached through the plugin."""
    node = make_node("n1", standalone=True)
    pod = pods.make("fuzz")

    @FUZZ
    @given(env=environments(pod), stdin=stdins(str(node.socket)))
    def check(env: dict[bytes, bytes], stdin: bytes) -> None:
        answer = answer_of(run(node.bin_dir / build, env, stdin), env)
        if env.get(b"CNI_COMMAND") == b"ADD" and answer and "code" not in answer:
            run(node.bin_dir / build, {**env, b"CNI_COMMAND": b"DEL"}, stdin)  # it got through: undo it

    check()
    assert_agent_is_well(node)


def test_random_requests_to_the_agent_socket(make_node) -> None:
    """A peer that is no plugin (framing of its own, random bytes, cut short): each connection still
    gets a CNI error, and the agent goes on serving."""
    node = make_node("n1", standalone=True)
    framed = st.builds(lambda env, stdin: plugin.encode_request(env, stdin),
                       st.dictionaries(st.sampled_from([b"CNI_COMMAND", b"CNI_CONTAINERID", b"CNI_X"]), RAW_TEXT,
                                       max_size=3), stdins(str(node.socket)))  # fmt: skip

    @FUZZ
    @given(request=framed | st.binary(max_size=300))
    def check(request: bytes) -> None:
        answer = exchange(node.socket, request)
        assert answer[:1] in (b"\0", b"\1"), answer
        if answer[0] == 1:
            error = json.loads(answer[1:])
            assert error["code"] in SPEC_CODES and error["msg"], error

    check()
    oversize = exchange(node.socket, b"\0" * (plugin.MAX_REQUEST + 1))
    assert oversize[:1] == b"\1" and json.loads(oversize[1:])["msg"] == (
        f"request to the node agent larger than {plugin.MAX_REQUEST} bytes")
    assert_agent_is_well(node)


def exchange(path: Path, request: bytes) -> bytes:
    """Send `request` as the plugin does and read the answer, also when the agent stops reading
    early (it answers, then closes: sending the rest fails)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return b"".join(iter(lambda: sock.recv(1 << 16), b""))


def assert_agent_is_well(node: Any) -> None:
    """Still running, still answering, and nothing unexpected in its log."""
    assert node.process.poll() is None, node.log.read_text()
    conf = dict(node.conf(), cniVersion="1.1.0")
    status = node.cni("STATUS", conf)
    assert (status.returncode, status.stdout) == (0, ""), status
    log = node.log.read_text()
    assert "Traceback" not in log and "event=handler-crash" not in log, log[-3000:]


# The cases issue 16 reported and the edges around them, each fixed: one CNI error on stdout.
ADD = {b"CNI_COMMAND": b"ADD", b"CNI_CONTAINERID": b"c1", b"CNI_NETNS": b"/proc/self/ns/net", b"CNI_IFNAME": b"eth0",
       b"CNI_PATH": b"/opt/cni/bin"}  # fmt: skip
CONF = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "underlay", "agentSocket": NO_AGENT}).encode()


@PLUGINS
@pytest.mark.parametrize(("env", "stdin", "code", "text"), [
    (ADD, b"{", 6, "Expecting property name enclosed in double quotes"),  # was SystemError in _json.Scanner
    (ADD, b"[" * 60_000, 6, f"nested deeper than {MAX_DEPTH} levels"),  # was RecursionError
    (ADD, b'{"agentSocket": "/x", "a": ' + b"[" * 60_000, 6, f"nested deeper than {MAX_DEPTH} levels"),
    (ADD, b'{"name": "\xff"}', 6, "not UTF-8: byte 0xff at offset 10"),
    (ADD, b"", 6, "no network configuration on stdin"),
    (ADD, None, 6, "no network configuration on stdin"),  # stdin closed
    (ADD, b'{"a": "' + b"x" * MAX_CONFIG + b'"}', 6, f"{MAX_CONFIG + 1} bytes, more than the limit of {MAX_CONFIG}"),
    ({**ADD, b"CNI_IFNAME": b"eth\xa0"}, CONF, 4, "invalid CNI_IFNAME b'eth\\xa0'"),
    ({**ADD, b"CNI_CONTAINERID": b" "}, CONF, 4, "invalid CNI_CONTAINERID ' '"),
    ({**ADD, b"CNI_ARGS": b"K8S_POD_NAME=\xff"}, CONF, 4, "CNI_ARGS: K8S_POD_NAME=b'\\xff' is not a Kubernetes name"),
    ({**ADD, b"CNI_COMMAND": b"\xff"}, CONF, 4, "unknown CNI_COMMAND b'\\xff'"),
])  # fmt: skip
def test_issue_16_cases(cni_bin: Path, build: str, env: dict[bytes, bytes], stdin: bytes | None, code: int,
                        text: str) -> None:
    answer = answer_of(run(cni_bin / build, env, stdin), env)
    assert answer is not None and answer["code"] == code and text in answer["msg"] + answer["details"], answer


def test_the_forwarder_without_its_python_plugin_still_answers_in_json(tmp_path: Path) -> None:
    forwarder = install.install_binary(tmp_path)
    forwarder.with_name("underlay.py").unlink()
    call = run(forwarder, ADD, CONF)
    assert (call.returncode, call.stderr) == (1, b"")
    answer = json.loads(call.stdout)
    assert answer["code"] == 100 and answer["details"] == "reinstall the plugin: python3 -m cni.install"
    assert answer["msg"] == f"underlay: cannot run the Python plugin: {tmp_path / 'underlay.py'}: No such file or directory"
