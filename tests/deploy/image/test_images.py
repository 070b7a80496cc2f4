"""The real images, run with podman (no network): what the cluster runs them for works, what should be
left out is, and the archives import into containerd under the names the manifests use."""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploy.image import build
from deploy.image.podman import Podman

UNDERLAY = build.UNDERLAY.name
PAUSE = build.PAUSE.name
PT_INTERP = 3  # an ELF program header naming the dynamic loader: a dynamically linked program
STAYS_UP = 2.0  # seconds the pause container must outlive its start without being signalled


def run_ok(podman: Podman, *command: str, options: tuple[str, ...] = ()) -> str:
    done = podman.runs(UNDERLAY, *command, options=options)
    assert done.returncode == 0, f"{' '.join(command)} in {UNDERLAY}: exit {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("command, usage", [
    (("underlay-controller", "--help"), "usage: underlay-controller"),
    (("underlay-agent", "--help"), "usage: underlay-agent"),
    (("python", "-m", "cni.install", "--help"), "--bin-dir"),
], ids=["controller", "agent", "cni.install"])
def test_the_image_runs_each_command_of_the_cluster(podman, archives, command, usage):
    assert usage in run_ok(podman, *command)


CONTROLLER_CONFIG = """store = "/tmp/store.sqlite"
[openflow]
host = "127.0.0.1"
port = 6653
[api]
host = "127.0.0.1"
port = 6680
plaintext = true
[pools.default]
subnet = "198.18.0.0/24"
"""
ASK_HEALTH = """import sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen("http://127.0.0.1:6680/v1/health", timeout=5) as answer:
            sys.exit(print(answer.status, answer.read().decode()))
    except OSError as error:
        if time.monotonic() > deadline:
            sys.exit(f"no answer from the controller: {error}: {open('/tmp/controller.log').read()}")
        time.sleep(0.1)
"""


def test_the_controller_serves_its_api_in_the_image(podman, archives):
    """Not only --help: the controller starts with a config (SQLite store, OpenFlow and plain HTTP on the
    container's own loopback) and answers /v1/health, so its runtime dependencies work in the image."""
    script = ('printf %s "$CONFIG" > /tmp/controller.toml && '
              "(underlay-controller --config /tmp/controller.toml 2>/tmp/controller.log &) && "
              'python -c "$ASK"')
    answer = run_ok(podman, "sh", "-c", script,
                    options=("-e", f"CONFIG={CONTROLLER_CONFIG}", "-e", f"ASK={ASK_HEALTH}")).split(" ", 1)
    assert answer[0] == "200" and json.loads(answer[1])["status"] == "ok", answer


def test_every_module_of_the_package_imports_in_the_image(podman, archives):
    """Nothing the image leaves out (the compiler, trimmed parts of dependencies) is needed by our code."""
    code = ("import importlib, pkgutil\n"
            "for top in ('controller', 'node_agent', 'openflow', 'cni'):\n"
            "    package = importlib.import_module(top)\n"
            "    for module in pkgutil.walk_packages(package.__path__, top + '.'):\n"
            "        importlib.import_module(module.name)\n"
            "print('imported')\n")
    assert run_ok(podman, "python", "-c", code).strip() == "imported"


def test_the_init_container_installs_the_static_forwarder_and_the_conflist_on_the_node(podman, archives, tmp_path):
    """What the agent DaemonSet's init container does, with the node's directories mounted: the node
    gets the prebuilt forwarder (no compiler in the image), static so any node's libc runs it."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir(), conf_dir.mkdir()
    out = run_ok(podman, "python", "-m", "cni.install", "--bin-dir", "/opt/cni/bin", "--conf-dir", "/etc/cni/net.d",
                 options=("-v", f"{bin_dir}:/opt/cni/bin", "-v", f"{conf_dir}:/etc/cni/net.d"))
    assert "installed /opt/cni/bin/underlay" in out
    forwarder = (bin_dir / "underlay").read_bytes()
    assert forwarder.startswith(b"\x7fELF"), "the plugin is not the native forwarder"
    assert not is_dynamic(forwarder), "the forwarder needs a dynamic loader: a node's older libc may not run it"
    assert (bin_dir / "underlay.py").read_text().startswith("#!/usr/bin/python3 -IS\n")
    assert json.loads((conf_dir / "10-underlay.conflist").read_text())["plugins"][0]["type"] == "underlay"
    version = subprocess.run([bin_dir / "underlay"], input=b"", capture_output=True, env={"CNI_COMMAND": "VERSION"})
    assert json.loads(version.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


def test_the_forwarder_hands_what_it_cannot_do_to_the_python_plugin(podman, archives):
    """In the image itself, an ADD with no agent to reach goes to the Python plugin beside the
    forwarder, which answers with a CNI error naming the socket: both halves and the path between them."""
    config = json.dumps({"cniVersion": "1.0.0", "name": "underlay", "type": "underlay",
                         "agentSocket": "/run/underlay/absent.sock"})
    script = (f"python -m cni.install --no-conf >/dev/null && echo '{config}' | CNI_COMMAND=ADD "
              "CNI_CONTAINERID=c1 CNI_NETNS=/proc/self/ns/net CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin /opt/cni/bin/underlay")
    done = podman.runs(UNDERLAY, "sh", "-c", script)
    assert done.returncode == 1, done
    error = json.loads(done.stdout)
    assert error["code"] and "/run/underlay/absent.sock" in error["msg"] + error.get("details", ""), error


def test_the_image_holds_no_compiler_and_stays_small(podman, archives):
    assert podman.runs(UNDERLAY, "sh", "-c", "command -v gcc || command -v cc").returncode != 0
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", UNDERLAY))
    assert size < 400 << 20, f"{UNDERLAY} is {size >> 20} MiB"


def test_the_pause_image_is_one_static_file_run_as_nobody(podman, archives):
    inspected = json.loads(podman.run("image", "inspect", PAUSE))[0]
    assert inspected["Config"]["Entrypoint"] == ["/pause"] and inspected["Config"]["User"] == "65535:65535"
    assert inspected["Size"] < 1 << 20


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_pause_container_stays_up_until_signalled(podman, archives, stop):
    with pause_container(podman) as container:
        with pytest.raises(subprocess.TimeoutExpired):  # pause does not end by itself
            subprocess.run(podman.argv("wait", container), env=podman.env(), capture_output=True, timeout=STAYS_UP)
        podman.run("kill", "--signal", stop.name, container)
        assert podman.run("wait", container, timeout=30).strip() == "0"


def test_the_archives_import_into_containerd_under_the_manifests_names(archives, tmp_path):
    """`ctr -n k8s.io images import` of each archive (Debian's containerd, as kubelet's node runs it)
    gives exactly the names the manifests and containerd's sandbox_image use."""
    with private_containerd(tmp_path) as ctr:
        for name, archive in archives.items():
            subprocess.run([*ctr, "images", "import", str(archive)], check=True, capture_output=True)
        listed = subprocess.run([*ctr, "images", "ls", "-q"], check=True, capture_output=True, text=True).stdout
    assert {UNDERLAY, PAUSE} <= set(listed.split()), listed


def test_an_unchanged_build_reuses_the_layers_and_the_archives(archives):
    before = {name: path.stat().st_mtime_ns for name, path in archives.items()}
    lines: list[str] = []
    assert build.ensure(log=lines.append) == archives
    assert {name: path.stat().st_mtime_ns for name, path in archives.items()} == before, lines
    assert sum("unchanged" in line for line in lines) == 2, lines


def is_dynamic(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF program has a PT_INTERP header (needs a dynamic loader)."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == PT_INTERP for i in range(phnum))


@contextmanager
def pause_container(podman: Podman) -> Iterator[str]:
    container = podman.run("run", "-d", "--network", "none", PAUSE).strip()
    try:
        yield container
    finally:
        podman.run("rm", "-f", "-t", "0", container)


@contextmanager
def private_containerd(root: Path) -> Iterator[list[str]]:
    """Debian's containerd on its own root, state and socket (no CRI, nothing under /opt or /run):
    `ctr` argv pointed at it, in the k8s.io namespace as kubelet's containerd uses."""
    missing = [tool for tool in ("containerd", "ctr") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: apt-get install containerd", pytrace=False)
    sockets = Path(tempfile.mkdtemp(prefix="ctrd-"))  # a unix socket's path must stay short
    config = root / "containerd.toml"
    config.write_text(f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]
[grpc]
  address = "{sockets / 'sock'}"
""")
    with open(root / "containerd.log", "w") as log:
        daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    ctr = ["ctr", "--address", str(sockets / "sock"), "-n", "k8s.io"]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
            assert daemon.poll() is None, f"containerd ended: {(root / 'containerd.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "containerd did not answer within 30 s"
            time.sleep(0.1)
        yield ctr
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(sockets, ignore_errors=True)
