"""Install the plugin where a runtime finds it: `python -m cni.install --bin-dir DIR --conf-dir DIR`.

The plugin is copied as one self-contained file (runtimes exec plugins from their CNI bin dir and
know nothing of our virtualenv) with a shebang for the system's Python in isolated, no-site mode.
Where a C compiler is at hand, `underlay` is instead the small native forwarder (cni/shim.c), which
starts in ~1 ms instead of Python's ~10: the Python plugin is then installed beside it as
`underlay.py` and the forwarder hands it every call it does not simply forward (errors above all).
An example conflist is written beside other networks unless one with that name already exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cni import plugin, spec

PLUGIN_NAME = "underlay"
SHIM_SOURCE = Path(__file__).with_name("shim.c")
SHEBANG = "#!{python} -IS\n"  # one argument: the kernel passes the rest of the line as one
CONFLIST_NAME = "10-underlay.conflist"
# The example chains the reference `tuning` plugin, and Debian's (1.1.1 plugins) speaks up to 1.0.0:
# a 1.1.0 conflist would fail its first ADD at `tuning`. Ours speaks 1.1.0 too (STATUS, GC).
EXAMPLE_CNI_VERSION = "1.0.0"


def default_python() -> str:
    """/usr/bin/python3 where it exists (Debian); the running interpreter otherwise."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else shutil.which("python3") or "python3"


def plugin_source(python: str) -> str:
    """The plugin as one file: our shebang, and cni/spec.py's source embedded for its fallback."""
    source = Path(plugin.__file__).read_text()
    body = source.split("\n", 1)[1] if source.startswith("#!") else source
    placeholder = "SPEC_SOURCE: str | None = None"
    if body.count(placeholder) != 1:
        raise RuntimeError(f"{plugin.__file__} must contain {placeholder!r} exactly once")
    return SHEBANG.format(python=python) + body.replace(placeholder, f"SPEC_SOURCE = {Path(spec.__file__).read_text()!r}")


def install_binary(bin_dir: Path, *, python: str | None = None, name: str = PLUGIN_NAME,
                   native: bool = True) -> Path:
    """Install the plugin as `bin_dir/name`: the native forwarder in front of the Python plugin when
    `native` and a C compiler allow, the Python plugin alone otherwise."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = python or default_python()
    target = bin_dir / name
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not (native and compiler):
        _write_atomically(target, plugin_source(python).encode())
        return target
    fallback = bin_dir / f"{name}.py"
    _write_atomically(fallback, plugin_source(python).encode())
    _write_atomically(target, _compile_shim(compiler, fallback=fallback, python=python))
    return target


def _compile_shim(compiler: str, *, fallback: Path, python: str) -> bytes:
    """cni/shim.c built for this install: it knows where its Python fallback and interpreter are."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "underlay"
        subprocess.run([compiler, "-O2", "-s", "-o", str(output), str(SHIM_SOURCE),
                        f"-DFALLBACK={json.dumps(str(fallback.resolve()))}", f"-DPYTHON={json.dumps(python)}"],
                       check=True, capture_output=True)
        return output.read_bytes()


def _write_atomically(target: Path, content: bytes) -> None:
    """A running runtime may exec the plugin at any moment: it sees the old file or the new one."""
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
        tmp.write(content)
    os.chmod(tmp.name, 0o755)
    os.replace(tmp.name, target)


def example_conflist(*, name: str = "underlay", master: str | None = None, agent_socket: str = plugin.DEFAULT_SOCKET,
                     cni_version: str = EXAMPLE_CNI_VERSION) -> spec.JsonObject:
    """A conflist with our plugin first and the reference `tuning` plugin chained after it."""
    ours: spec.JsonObject = {"type": PLUGIN_NAME, "mode": "macvlan", "macvlanMode": "bridge",
                             "agentSocket": agent_socket, "capabilities": {"mac": True, "ips": True}}
    if master:
        ours["master"] = master
    return {"cniVersion": cni_version, "name": name, "plugins": [ours, {"type": "tuning"}]}


def install_conflist(conf_dir: Path, conflist: spec.JsonObject, *, filename: str = CONFLIST_NAME) -> Path | None:
    """Write `conflist` unless the file exists; return its path when written."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    target = conf_dir / filename
    if target.exists():
        return None
    target.write_text(json.dumps(conflist, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=Path("/opt/cni/bin"))
    parser.add_argument("--conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    parser.add_argument("--no-conf", action="store_true", help="install only the plugin binary")
    parser.add_argument("--python", help="interpreter for the shebang (default: /usr/bin/python3)")
    parser.add_argument("--master", help="uplink interface to put in the example conflist")
    parser.add_argument("--agent-socket", default=plugin.DEFAULT_SOCKET)
    args = parser.parse_args(argv)
    print(f"installed {install_binary(args.bin_dir, python=args.python)}")
    if not args.no_conf:
        written = install_conflist(args.conf_dir, example_conflist(master=args.master, agent_socket=args.agent_socket))
        print(f"wrote {written}" if written else f"kept the existing {args.conf_dir / CONFLIST_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
