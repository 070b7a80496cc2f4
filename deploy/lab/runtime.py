"""A minimal container runtime's CNI side: run a conflist's chain the way libcni does.

ADD runs the plugins in order, each getting the previous result as `prevResult`; DEL runs them in
reverse, each with the cached ADD result; `runtimeConfig` carries only the capabilities a plugin
declares. Plugins are executed as binaries found in CNI_PATH, with the CNI_* environment and the
network config on stdin, inside the node's namespace: exactly what containerd or CRI-O does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.lab import netns

REFERENCE_PLUGINS = Path("/usr/lib/cni")


class CniError(RuntimeError):
    """A plugin failed: its error JSON (code, msg, details) is kept."""

    def __init__(self, plugin: str, command: str, call: PluginCall) -> None:
        error = call.json if isinstance(call.json, dict) else {}
        super().__init__(f"{command} {plugin}: {error.get('msg') or call.stderr.strip() or call.stdout.strip()}"
                         f" (code {error.get('code', '?')}, exit {call.returncode})")
        self.error = error
        self.call = call


@dataclass(frozen=True)
class PluginCall:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else {}


@dataclass(frozen=True)
class Attachment:
    """Who is being attached: the CNI_* values a runtime sets for one container interface."""

    container_id: str
    netns_path: str
    ifname: str = "eth0"
    args: Mapping[str, str] = field(default_factory=dict)
    runtime_config: Mapping[str, Any] = field(default_factory=dict)

    def environment(self, command: str, cni_path: Sequence[Path]) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns_path,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in dict(self.args).items()),
            "CNI_PATH": ":".join(str(p) for p in cni_path),
        }


# How a plugin binary runs on its node: (argv, stdin, environment, timeout) -> its exit and output.
# A namespace node runs it through `ip netns exec`; a User-Mode Linux node through its command channel.
Execute = Callable[[Sequence[str], bytes, Mapping[str, str], float], PluginCall]


def in_namespace(node_ns: str | None) -> Execute:
    """Run plugins in namespace `node_ns` (None: right here)."""
    def execute(argv: Sequence[str], stdin: bytes, env: Mapping[str, str], timeout: float) -> PluginCall:
        command = netns.exec_argv(node_ns, argv) if node_ns else list(argv)
        proc = subprocess.run(command, input=stdin, capture_output=True, env=dict(env), timeout=timeout)
        return PluginCall(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    return execute


def run_plugin(binary: Path, command: str, config: Mapping[str, Any] | bytes, *, env: Mapping[str, str],
               node_ns: str | None = None, execute: Execute | None = None, timeout: float = 60) -> PluginCall:
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    return (execute or in_namespace(node_ns))([str(binary)], stdin, env, timeout)


def plugin_config(conflist: Mapping[str, Any], plugin: Mapping[str, Any], *, prev: Any,
                  runtime_config: Mapping[str, Any]) -> dict[str, Any]:
    """What libcni puts on one plugin's stdin."""
    config = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    wanted = {k: v for k, v in dict(runtime_config).items() if plugin.get("capabilities", {}).get(k)}
    if wanted:
        config["runtimeConfig"] = wanted
    if prev is not None:
        config["prevResult"] = prev
    return config


def find_plugin(kind: str, cni_path: Sequence[Path]) -> Path:
    for directory in cni_path:
        if (directory / kind).exists():
            return directory / kind
    raise FileNotFoundError(f"CNI plugin {kind!r} not found in {':'.join(map(str, cni_path))}")


def run_chain(conflist: Mapping[str, Any], command: str, attachment: Attachment, *, cni_path: Sequence[Path],
              node_ns: str | None = None, execute: Execute | None = None, prev_result: Any = None) -> Any:
    """ADD/CHECK/DEL the whole chain; returns the final result (ADD), raises CniError on failure.

    `prev_result` is the cached ADD result, which CHECK and DEL hand to every plugin."""
    plugins = list(conflist["plugins"])
    if command == "DEL":
        plugins.reverse()
    env = attachment.environment(command, cni_path)
    result = prev_result
    for plugin in plugins:
        prev = result if command == "ADD" else prev_result
        config = plugin_config(conflist, plugin, prev=prev, runtime_config=attachment.runtime_config)
        call = run_plugin(find_plugin(plugin["type"], cni_path), command, config, env=env, node_ns=node_ns,
                          execute=execute)
        if call.returncode != 0:
            raise CniError(plugin["type"], command, call)
        if command == "ADD":
            result = call.json
    return result
