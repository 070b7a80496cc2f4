"""Install the plugin where a runtime finds it: `python -m cni.install --bin-dir DIR --conf-dir DIR`.

The plugin is copied as one self-contained file (runtimes exec plugins from their CNI bin dir and
know nothing of our virtualenv) with a shebang for the system's Python in isolated, no-site mode.
Where a C compiler is at hand, `underlay` is instead the small native forwarder (cni/shim.c), which
starts in ~1 ms instead of Python's ~10: the Python plugin is then installed beside it as
`underlay.py` and the forwarder hands it every call it does not simply forward (errors above all).
An image has no compiler: its build runs `--prebuild-shim`, which keeps a static forwarder (it runs on
any node's libc) in the package with the paths compiled into it, used where they are the install's.
An example conflist is written beside other networks unless one with that name already exists
(`--replace`: always, as the cluster's DaemonSet does so that the file follows its ConfigMap).
`--service-cidr` puts the cluster's Service ranges in it (`serviceCIDR`, see cni/spec.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cni import plugin, spec

PLUGIN_NAME = "underlay"
SHIM_SOURCE = Path(__file__).with_name("shim.c")
PREBUILT_SHIM = Path(__file__).with_name("shim")  # made by --prebuild-shim (deploy/image/Containerfile)
PREBUILT_PATHS = PREBUILT_SHIM.with_suffix(".json")  # {"fallback": ..., "python": ...} compiled into it
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
    `native` and a forwarder prebuilt for these paths or a C compiler allow, the Python plugin alone
    otherwise."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = python or default_python()
    target = bin_dir / name
    fallback = bin_dir / f"{name}.py"
    compiler = shutil.which("cc") or shutil.which("gcc")
    shim = _prebuilt_shim(fallback=fallback, python=python) if native else None
    if native and shim is None and compiler:
        shim = _compile_shim(compiler, fallback=fallback, python=python)
    if shim is None:
        _write_atomically(target, plugin_source(python).encode())
        return target
    _write_atomically(fallback, plugin_source(python).encode())
    _write_atomically(target, shim)
    return target


def prebuild_shim(bin_dir: Path, *, python: str | None = None) -> Path:
    """Compile the forwarder, static, for an install into `bin_dir` and keep it in the package."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("cni.install: --prebuild-shim needs a C compiler (cc or gcc) and the static libc (libc6-dev)")
    paths = {"fallback": str((bin_dir / f"{PLUGIN_NAME}.py").resolve()), "python": python or default_python()}
    PREBUILT_SHIM.write_bytes(_compile_shim(compiler, fallback=Path(paths["fallback"]), python=paths["python"],
                                            static=True))
    PREBUILT_PATHS.write_text(json.dumps(paths) + "\n")
    return PREBUILT_SHIM


def _prebuilt_shim(*, fallback: Path, python: str) -> bytes | None:
    """The prebuilt forwarder when the paths compiled into it are this install's."""
    if not PREBUILT_PATHS.exists():
        return None
    paths = json.loads(PREBUILT_PATHS.read_text())
    if paths != {"fallback": str(fallback.resolve()), "python": python}:
        return None
    return PREBUILT_SHIM.read_bytes()


def _compile_shim(compiler: str, *, fallback: Path, python: str, static: bool = False) -> bytes:
    """cni/shim.c built for this install: it knows where its Python fallback and interpreter are."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "underlay"
        subprocess.run([compiler, "-O2", "-s", *(["-static"] if static else []), "-o", str(output), str(SHIM_SOURCE),
                        f"-DFALLBACK={json.dumps(str(fallback.resolve()))}", f"-DPYTHON={json.dumps(python)}"],
                       check=True, capture_output=True)
        return output.read_bytes()


def _write_atomically(target: Path, content: bytes, *, mode: int = 0o755) -> None:
    """A running runtime may exec the plugin at any moment: it sees the old file or the new one."""
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
        tmp.write(content)
    os.chmod(tmp.name, mode)
    os.replace(tmp.name, target)


def example_conflist(*, name: str = "underlay", master: str | None = None, agent_socket: str = plugin.DEFAULT_SOCKET,
                     service_cidrs: Sequence[str] = (), chain: Sequence[str] = ("tuning",),
                     cni_version: str = EXAMPLE_CNI_VERSION) -> spec.JsonObject:
    """A conflist with our plugin first and the plugins of `chain` after it (by default the reference
    `tuning` plugin, to show chaining)."""
    ours: spec.JsonObject = {"type": PLUGIN_NAME, "mode": "macvlan", "macvlanMode": "bridge",
                             "agentSocket": agent_socket, "capabilities": {"mac": True, "ips": True}}
    if master:
        ours["master"] = master
    if service_cidrs:
        ours["serviceCIDR"] = list(service_cidrs)
    conflist = {"cniVersion": cni_version, "name": name, "plugins": [ours, *({"type": kind} for kind in chain)]}
    spec.validate_config({**ours, "name": name, "cniVersion": cni_version})  # refused here, not at the first ADD
    return conflist


def install_conflist(conf_dir: Path, conflist: spec.JsonObject, *, filename: str = CONFLIST_NAME,
                     replace: bool = False) -> Path | None:
    """Write `conflist` unless the file exists (or always, with `replace`: atomically, a runtime may
    be reading it); return its path when written."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    target = conf_dir / filename
    if target.exists() and not replace:
        return None
    _write_atomically(target, (json.dumps(conflist, indent=2) + "\n").encode(), mode=0o644)
    return target


def comma_list(text: str) -> list[str]:
    """A flag's comma-separated values (`--service-cidr`, `--chain`); an empty value: none."""
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=Path("/opt/cni/bin"))
    parser.add_argument("--conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    parser.add_argument("--no-conf", action="store_true", help="install only the plugin binary")
    parser.add_argument("--python", help="interpreter for the shebang (default: /usr/bin/python3)")
    parser.add_argument("--master", help="uplink interface to put in the example conflist")
    parser.add_argument("--agent-socket", default=plugin.DEFAULT_SOCKET)
    parser.add_argument("--service-cidr", type=comma_list, default=[], metavar="CIDR[,CIDR]",
                        help="the cluster's Service ranges, which pods reach through their node (serviceCIDR)")
    parser.add_argument("--chain", type=comma_list, default=["tuning"], metavar="PLUGIN[,PLUGIN]",
                        help="plugins chained after ours (default: tuning; an empty value: none)")
    parser.add_argument("--replace", action="store_true", help="replace an existing conflist of ours")
    parser.add_argument("--prebuild-shim", action="store_true",
                        help="only compile the native forwarder for --bin-dir into the package (image builds)")
    args = parser.parse_args(argv)
    if args.prebuild_shim:
        print(f"built {prebuild_shim(args.bin_dir, python=args.python)}")
        return 0
    try:
        conflist = example_conflist(master=args.master, agent_socket=args.agent_socket, service_cidrs=args.service_cidr,
                                    chain=args.chain)
    except spec.CniError as err:
        parser.error(f"{err.msg}: {err.details}" if err.details else err.msg)
    print(f"installed {install_binary(args.bin_dir, python=args.python)}")
    if not args.no_conf:
        written = install_conflist(args.conf_dir, conflist, replace=args.replace)
        print(f"wrote {written}" if written else f"kept the existing {args.conf_dir / CONFLIST_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
