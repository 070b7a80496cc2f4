"""The shim's pure parts (no root, no agent): result formats, merging, CNI_ARGS, install, start time."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from cni import install
from cni.spec import BAD_ENV, UNSUPPORTED_FIELD, CniError, merge, neutral, parse_args, to_version

RESULT = {"interfaces": [{"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/run/netns/p"}],
          "ips": [{"address": "198.18.5.101/24", "gateway": "198.18.5.1", "interface": 0}],
          "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.5.1"}]}


def test_040_results_carry_the_ip_version_and_1x_do_not():
    assert to_version(RESULT, "0.4.0")["ips"][0]["version"] == "4"
    assert "version" not in to_version(RESULT, "1.0.0")["ips"][0]
    assert neutral(to_version(RESULT, "0.4.0")) == RESULT


def test_merge_shifts_our_interface_indexes_past_the_previous_ones():
    prev = to_version({"interfaces": [{"name": "lo0"}], "ips": [{"address": "198.19.0.1/32", "interface": 0}]},
                      "0.4.0")
    merged = merge(prev, RESULT)
    assert [i["name"] for i in merged["interfaces"]] == ["lo0", "eth0"]
    assert [ip["interface"] for ip in merged["ips"]] == [0, 1]


def test_cni_args():
    assert parse_args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0") == {
        "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"}
    assert parse_args("IgnoreUnknown=true;X=1")["X"] == "1"
    with pytest.raises(CniError) as unknown:
        parse_args("X=1")
    assert unknown.value.code == UNSUPPORTED_FIELD
    with pytest.raises(CniError) as malformed:
        parse_args("novalue")
    assert malformed.value.code == BAD_ENV


@pytest.mark.parametrize("native", [True, False], ids=["native forwarder", "python only"])
def test_install_writes_a_self_contained_plugin_and_keeps_an_existing_conflist(tmp_path, native):
    plugin = install.install_binary(tmp_path / "bin", native=native)
    python_plugin = plugin.with_name("underlay.py") if native else plugin
    assert plugin.read_bytes().startswith(b"\x7fELF" if native else b"#!/usr/bin/python3 -IS\n")
    assert python_plugin.read_text().startswith("#!/usr/bin/python3 -IS\n")
    assert os.access(plugin, os.X_OK)
    out = subprocess.run([str(plugin)], input=b"", capture_output=True, env={"CNI_COMMAND": "VERSION"})
    assert json.loads(out.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]

    written = install.install_conflist(tmp_path / "conf", install.example_conflist(master="eth0"))
    conflist = json.loads(written.read_text())
    assert conflist["plugins"][0]["type"] == "underlay"
    assert conflist["cniVersion"] == "1.0.0", "the newest version the chained reference tuning speaks"
    assert install.install_conflist(tmp_path / "conf", {"other": True}) is None


def test_a_daemonsets_install_replaces_its_conflist_and_refuses_a_bad_service_range(tmp_path, capsys):
    argv = ["--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "conf"), "--chain=", "--replace"]
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / install.CONFLIST_NAME).write_text("{}")
    assert install.main([*argv, "--service-cidr", "198.19.96.0/24, fd00:96::/112"]) == 0
    ours, = json.loads((tmp_path / "conf" / install.CONFLIST_NAME).read_text())["plugins"]
    assert ours["serviceCIDR"] == ["198.19.96.0/24", "fd00:96::/112"]
    with pytest.raises(SystemExit) as refused:
        install.main([*argv, "--service-cidr", "198.19.96.1/24"])
    assert refused.value.code == 2
    assert "serviceCIDR[0]: '198.19.96.1/24' is not a network: 198.19.96.1/24 has host bits set" in capsys.readouterr().err


def test_plugin_starts_fast(tmp_path):
    """The reason for the shim: a VERSION call costs a bare interpreter start, not pyroute2's import."""
    plugin = install.install_binary(tmp_path)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([str(plugin)], input=b"", capture_output=True, env={"CNI_COMMAND": "VERSION"}, check=True)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.1


def test_version_answer_is_the_specs():
    """The plugin answers VERSION from a constant (no json import); it must say what cni.spec says."""
    from cni import plugin, spec

    answered = spec.respond({"CNI_COMMAND": "VERSION"}, b"{}", agent=print, ipam=print)
    assert answered == (0, plugin.VERSION_ANSWER)


def test_request_round_trip_keeps_only_the_cni_environment():
    from cni.plugin import decode_request, encode_request

    environ = {b"CNI_COMMAND": b"ADD", b"CNI_ARGS": b"", b"PATH": b"/bin", b"CNI_NETNS": b"/run/netns/p\xff"}
    env, stdin = decode_request(encode_request(environ, b'{"x": 1}'))
    assert env == {"CNI_COMMAND": "ADD", "CNI_ARGS": "", "CNI_NETNS": "/run/netns/p\udcff"}
    assert stdin == b'{"x": 1}'


def test_an_add_the_agent_answers_with_nothing_is_an_internal_error_that_says_so(tmp_path):
    """Found by mypy: a None result went on into to_version and surfaced as an AttributeError."""
    from cni import spec

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": str(tmp_path), "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}
    config = b'{"cniVersion": "1.0.0", "name": "net", "type": "underlay"}'
    status, stdout = spec.respond(env, config, agent=lambda request: None, ipam=print)
    assert status == 1
    assert json.loads(stdout) == {"cniVersion": "1.0.0", "code": spec.INTERNAL, "details": "",
                                  "msg": "the node agent returned no result for ADD"}


@pytest.fixture
def prebuilt(tmp_path, monkeypatch):
    """The package's prebuilt forwarder redirected into tmp_path (an image build keeps it in the package)."""
    monkeypatch.setattr(install, "PREBUILT_SHIM", tmp_path / "prebuilt" / "shim")
    monkeypatch.setattr(install, "PREBUILT_PATHS", tmp_path / "prebuilt" / "shim.json")
    (tmp_path / "prebuilt").mkdir()
    return install.PREBUILT_SHIM


def test_an_install_without_a_compiler_uses_the_static_forwarder_prebuilt_for_its_paths(tmp_path, prebuilt, monkeypatch):
    """What an image does: the build stage prebuilds, the init container (no compiler) installs it."""
    install.prebuild_shim(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "no-compiler"))
    plugin = install.install_binary(tmp_path / "bin", python="/usr/bin/python3")
    assert plugin.read_bytes() == prebuilt.read_bytes()
    assert b"/lib64/ld-linux" not in plugin.read_bytes(), "the prebuilt forwarder is not static"
    out = subprocess.run([str(plugin)], input=b"", capture_output=True, env={"CNI_COMMAND": "VERSION"})
    assert json.loads(out.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize("elsewhere", [{"bin": "other-bin"}, {"python": "/usr/local/bin/python3"}],
                         ids=["another bin dir", "another interpreter"])
def test_a_forwarder_prebuilt_for_other_paths_is_not_installed(tmp_path, prebuilt, monkeypatch, elsewhere):
    """Its compiled-in fallback or interpreter would not be there: the Python plugin alone is installed."""
    install.prebuild_shim(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "no-compiler"))
    plugin = install.install_binary(tmp_path / elsewhere.get("bin", "bin"), python=elsewhere.get("python", "/usr/bin/python3"))
    assert plugin.read_bytes().startswith(b"#!")
