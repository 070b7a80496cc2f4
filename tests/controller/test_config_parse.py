"""The controller's TOML config: defaults, a full file, and errors that name their key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.config import ApiLimits, ConfigError, KubernetesConfig, Route, check_servable, load, parse
from openflow.model import UnknownDestination

FULL = """
store = "/var/lib/underlay/store.sqlite"
cookie = "0x55aa000000000001"
unknown_destination = "drop"
release_cooldown = 5
resync_grace = 90
allow_global_macs = true
gc_interval = 60
gc_grace = 30

[openflow]
host = "0.0.0.0"
port = 6633
ctl_privkey = "/etc/underlay/ctl.key"
ctl_cert = "/etc/underlay/ctl.crt"
ca_certs = "/etc/underlay/ca.crt"

[api]
port = 7000
tls_cert = "api.crt"
tls_key = "/etc/underlay/api.key"
max_connections_per_peer = 8
header_timeout = 2.5

[nodes.n1]
token_file = "n1.token"

[nodes.n2]
token = "two"
dpid = "0x10"
port = 3
mac = "02:00:00:00:01:0A"
ip = "198.18.0.12"

[switches."0x10"]
trusted_ports = [1, 2]

[pools.lab]
subnet = "198.18.0.0/24"
ranges = ["198.18.0.100-198.18.0.199", "198.18.0.210 - 198.18.0.219"]
gateway = "198.18.0.1"
routes = [{dst = "0.0.0.0/0", gw = "198.18.0.1"}]
exclude = ["198.18.0.150", "198.18.0.160-198.18.0.163", "198.18.0.208/30"]
"""


def test_full_file(tmp_path: Path) -> None:
    (tmp_path / "n1.token").write_text("one\n")
    (tmp_path / "api.crt").write_text("")
    (tmp_path / "controller.toml").write_text(FULL.replace("/etc/underlay/api.key", str(tmp_path / "api.crt")))
    config = load(tmp_path / "controller.toml")
    assert config.cookie == 0x55AA_0000_0000_0001
    assert config.unknown_destination is UnknownDestination.DROP
    assert (config.release_cooldown, config.resync_grace) == (5.0, 90.0)
    assert (config.gc_interval, config.gc_grace) == (60.0, 30.0)
    assert (config.openflow.host, config.openflow.port, config.openflow.ca_certs) == ("0.0.0.0", 6633, "/etc/underlay/ca.crt")
    assert (config.api.host, config.api.port, config.api.scheme) == ("127.0.0.1", 7000, "https")
    assert (config.api.tls_cert, config.api.tls_key) == (str(tmp_path / "api.crt"),) * 2  # relative to the file
    assert config.api.limits == ApiLimits(max_connections_per_peer=8, header_timeout=2.5)
    assert config.tokens == {"n1": "one", "n2": "two"}
    assert (config.nodes["n2"].dpid, config.nodes["n2"].port) == (16, 3)
    assert (config.nodes["n2"].mac, config.nodes["n2"].ip, config.nodes["n1"].mac) == ("02:00:00:00:01:0a", "198.18.0.12", None)
    assert config.allow_global_macs
    assert config.switches[16].trusted_ports == (1, 2)
    pool = config.default_pool
    assert pool.name == "lab" and pool.default
    assert pool.ranges == (("198.18.0.100", "198.18.0.199"), ("198.18.0.210", "198.18.0.219"))
    assert pool.routes == (Route("0.0.0.0/0", "198.18.0.1"),)
    assert pool.exclude == ("198.18.0.150/32", "198.18.0.160/30", "198.18.0.208/30")


def test_defaults() -> None:
    config = parse({"store": "s.sqlite"})
    assert (config.openflow.host, config.openflow.port) == ("127.0.0.1", 6653)
    assert (config.api.host, config.api.port, config.api.tls_cert, config.api.plaintext) == ("127.0.0.1", 6680, None, False)
    assert config.api.limits == ApiLimits()
    assert config.cookie == 0x55AA_0000_0000_0000
    assert config.unknown_destination is UnknownDestination.NORMAL
    assert config.release_cooldown == 30.0
    assert config.openflow.ctl_privkey is None
    assert config.openflow.audit_interval == 30.0
    assert parse({"store": "s", "openflow": {"audit_interval": 0}}).openflow.audit_interval == 0.0  # off
    assert config.allow_global_macs is False


def test_the_kubernetes_store_and_table(tmp_path: Path) -> None:
    assert parse({"store": "s"}).kubernetes is None
    assert parse({"store": "kubernetes"}).kubernetes == KubernetesConfig()  # $KUBECONFIG, ~/.kube/config
    config = parse({"store": "kubernetes", "kubernetes": {"kubeconfig": "kc", "context": "lab"}}, base=tmp_path)
    assert config.kubernetes == KubernetesConfig(kubeconfig=str(tmp_path / "kc"), context="lab")
    assert parse({"store": "s", "kubernetes": {"in_cluster": True}}).kubernetes == KubernetesConfig(in_cluster=True)


def test_leader_election_keys_default_to_kubernetes_own() -> None:
    config = parse({"store": "kubernetes", "kubernetes": {"leader_election": True, "lease_namespace": "u"}}).kubernetes
    assert config is not None and config.leader_election
    assert (config.lease_name, config.lease_namespace) == ("underlay-controller", "u")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10, 2)
    assert parse({"store": "kubernetes"}).kubernetes.leader_election is False  # type: ignore[union-attr]


def test_the_controller_needs_tls_or_plain_http_asked_for() -> None:
    with pytest.raises(ConfigError, match=r"^api: set tls_cert and tls_key \(the API speaks HTTPS\), or plaintext = "):
        check_servable(parse({"store": "s"}))
    check_servable(parse({"store": "s", "api": {"plaintext": True}}))


def test_whole_subnet_is_the_default_range() -> None:
    config = parse({"store": "s", "pools": {"p": {"subnet": "198.18.0.0/30"}}})
    assert config.pools["p"].ranges == (("198.18.0.0", "198.18.0.3"),)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "store: missing"),
        ({"store": 1}, "store: 1 is not a string"),
        ({"store": "s", "stor": 1}, "stor: unknown key"),
        ({"store": "s", "cookie": "zz"}, "cookie: 'zz' is not a 64-bit cookie"),
        ({"store": "s", "cookie": 0}, "cookie: 0 is not a non-zero 64-bit integer"),
        ({"store": "s", "cookie": "0x99"}, "cookie: '0x99' has no tag: its high 16 bits mark the flows that are ours"),
        ({"store": "s", "unknown_destination": "flood"}, "unknown_destination: 'flood' is not one of \"normal\", \"drop\""),
        ({"store": "s", "release_cooldown": -1}, "release_cooldown: -1 is not a number of seconds"),
        ({"store": "s", "openflow": {"audit_interval": -5}}, "openflow.audit_interval: -5 is not a number of seconds"),
        ({"store": "s", "api": {"port": 70000}}, "api.port: 70000 is not a port number"),
        ({"store": "s", "api": {"prot": 1}}, "api.prot: unknown key"),
        ({"store": "s", "api": {"plaintext": True, "host": "198.18.0.1"}},
         "api.plaintext: plain HTTP is allowed only on a loopback address, and api.host is 198.18.0.1: set tls_cert "
         "and tls_key instead"),
        ({"store": "s", "api": {"plaintext": True, "host": "0.0.0.0"}}, "api.plaintext: plain HTTP is allowed only"),
        ({"store": "s", "api": {"plaintext": True, "host": "localhost"}}, "api.host: 'localhost' is not an IP address"),
        ({"store": "s", "api": {"tls_cert": "/dev/null"}}, "api: tls_cert and tls_key go together"),
        ({"store": "s", "api": {"tls_cert": "/nonexistent/c", "tls_key": "/dev/null"}},
         "api.tls_cert: cannot read /nonexistent/c"),
        ({"store": "s", "api": {"tls_cert": "/dev/null", "tls_key": "/dev/null", "plaintext": True}},
         "api.plaintext: true, but tls_cert is set too"),
        ({"store": "s", "api": {"plaintext": True, "max_connections_per_peer": 0}},
         "api.max_connections_per_peer: 0 is not a positive integer"),
        ({"store": "s", "api": {"plaintext": True, "threads": 1.5}}, "api.threads: 1.5 is not a positive integer"),
        ({"store": "s", "api": {"plaintext": True, "header_timeout": 0}},
         "api.header_timeout: 0 is not a number of seconds (> 0)"),
        ({"store": "s", "openflow": {"ctl_cert": "c"}}, "openflow: ctl_privkey and ctl_cert go together"),
        ({"store": "s", "nodes": {"n1": {}}}, "nodes.n1: needs exactly one of token, token_file"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "port": 3}}}, "nodes.n1.port: needs nodes.n1.dpid too"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "dpid": 1, "port": 0}}}, "nodes.n1.port: 0 is not an OpenFlow port"),
        ({"store": "s", "nodes": {"n1": {"token_file": "/nonexistent/t"}}}, "nodes.n1.token_file: cannot read /nonexistent/t"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "dpid": 1, "port": 1}}, "switches": {"1": {"trusted_ports": [1]}}},
         "nodes.n1.port: 1 is a trusted port of switch 0x1"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "mac": "01:00:5e:00:00:01"}}}, "nodes.n1.mac: '01:00:5e:00:00:01' is not a unicast MAC address"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "ip": "fd00::1"}}}, "nodes.n1.ip: 'fd00::1' is not an IPv4 address"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "mac": "02:00:00:00:00:01"}, "n2": {"token": "u", "mac": "02-00-00-00-00-01"}}},
         "nodes.n2.mac: 02:00:00:00:00:01 is pinned to node n1 too"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "ip": "10.0.0.1"}}, "pools": {"p": {"subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}}},
         "nodes.n1.ip: 10.0.0.1 is a gateway of pool p"),
        ({"store": "s", "nodes": {"n1": {"token": "t", "ip": "10.0.0.7"}}, "pools": {"p": {"subnet": "10.0.0.0/24"}}},
         "nodes.n1.ip: 10.0.0.7 is in pool p's ranges; exclude it there"),
        ({"store": "s", "allow_global_macs": "yes"}, "allow_global_macs: 'yes' is not a boolean"),
        ({"store": "s", "switches": {"sw1": {}}}, "switches.sw1: 'sw1' is not a datapath id"),
        ({"store": "s", "switches": {"1": {"trusted_ports": [1, "2"]}}}, "switches.1.trusted_ports[1]: '2' is not an OpenFlow port"),
        ({"store": "s", "pools": {"default": {"subnet": "10.0.0.0/33"}}}, "pools.default.subnet: '10.0.0.0/33' is not a network"),
        ({"store": "s", "pools": {"default": {"subnet": "10.0.0.1/24"}}}, "pools.default.subnet: '10.0.0.1/24' has host bits set (did you mean 10.0.0.0/24?)"),
        ({"store": "s", "pools": {"default": {"subnet": "fd00::/64"}}}, "pools.default.subnet: 'fd00::/64' is an IPv6 network: write it as subnet6"),
        ({"store": "s", "pools": {"p": {"subnet": "10.0.0.0/24", "ranges": ["10.0.0.5-10.0.1.4"]}}}, "pools.p.ranges: '10.0.0.5-10.0.1.4' is not inside 10.0.0.0/24"),
        ({"store": "s", "pools": {"p": {"subnet": "10.0.0.0/24", "ranges": ["10.0.0.9-10.0.0.5"]}}}, "pools.p.ranges[0]: '10.0.0.9-10.0.0.5' ends before it starts"),
        ({"store": "s", "pools": {"p": {"subnet": "10.0.0.0/24", "ranges": "10.0.0.1-10.0.0.5"}}}, "pools.p.ranges: '10.0.0.1-10.0.0.5' is not a list of"),
        ({"store": "s", "pools": {"p": {"subnet": "10.0.0.0/24", "gateway": "10.0.0.255"}}}, "pools.p.gateway: 10.0.0.255 is not a host address of 10.0.0.0/24"),
        ({"store": "s", "pools": {"p": {"subnet": "10.0.0.0/24", "routes": [{"dst": "x", "gw": "10.0.0.1"}]}}}, "pools.p.routes[0]: dst: 'x' is not a network"),
        ({"store": "s", "pools": {"p": {"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "10.9.0.1"}]}}}, "pools.p.routes: gateway 10.9.0.1 of 0.0.0.0/0 is not in 10.0.0.0/24"),
        ({"store": "s", "pools": {"p": {"subnet": "10.0.0.0/24", "exclude": ["10.0.0"]}}}, "pools.p.exclude[0]: '10.0.0' is not an address"),
        ({"store": "s", "pools": {"a": {"subnet": "10.0.0.0/24"}, "b": {"subnet": "10.0.1.0/24"}}}, "pools: several pools and none has default = true"),
        ({"store": "s", "pools": {"a": {"subnet": "10.0.0.0/24", "default": True}, "b": {"subnet": "10.0.0.0/25", "default": True}}}, "pools: more than one default (a, b)"),
        ({"store": "s", "pools": {"a": {"subnet": "10.0.0.0/24", "default": True}, "b": {"subnet": "10.0.0.0/25"}}}, "pools.b.ranges: overlap pool a"),
        ({"store": "kubernetes", "kubernetes": {"in_cluster": True, "kubeconfig": "k"}}, "kubernetes: in_cluster = true takes no kubeconfig or context"),
        ({"store": "kubernetes", "kubernetes": {"kubeconfg": "k"}}, "kubernetes.kubeconfg: unknown key"),
        ({"store": "s", "kubernetes": {"leader_election": True}}, 'kubernetes.leader_election: needs store = "kubernetes"'),
        ({"store": "kubernetes", "kubernetes": {"renew_deadline": 20}}, "kubernetes: lease_duration (15) > renew_deadline (20) > retry_period (2) > 0 is needed"),
        ({"store": "kubernetes", "kubernetes": {"retry_period": 0}}, "kubernetes.retry_period: 0 is not a number of seconds (> 0)"),
    ],
)  # fmt: skip
def test_errors_name_their_key(data: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(data)
    assert str(raised.value).startswith(error)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("store = ")
    with pytest.raises(ConfigError, match="bad.toml: "):
        load(tmp_path / "bad.toml")


def test_command_line_flags_override_the_file_key_by_key(tmp_path: Path) -> None:
    """The controller's one loader: the file, then --store/--openflow/--api over it."""
    from controller.main import load_config, parse_args

    (tmp_path / "n1.token").write_text("one\n")
    (tmp_path / "api.crt").write_text("")
    (tmp_path / "controller.toml").write_text(FULL.replace("/etc/underlay/api.key", str(tmp_path / "api.crt")))
    args = parse_args(["--config", str(tmp_path / "controller.toml"), "--store", "/tmp/other.sqlite",
                       "--api", "127.0.0.2:7001"])

    config = load_config(args)

    assert config.store == "/tmp/other.sqlite"
    assert (config.api.host, config.api.port) == ("127.0.0.2", 7001)
    assert (config.openflow.host, config.openflow.port, config.openflow.ca_certs) == ("0.0.0.0", 6633, "/etc/underlay/ca.crt")
    with pytest.raises(ConfigError, match=r"^--api nonsense: expected HOST:PORT$"):
        load_config(parse_args(["--config", str(tmp_path / "controller.toml"), "--api", "nonsense"]))


def test_a_bad_value_in_a_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('store = 5\n')
    with pytest.raises(ConfigError, match=r"c\.toml: store: "):
        load(tmp_path / "c.toml")
