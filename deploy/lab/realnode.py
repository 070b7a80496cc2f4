"""A real kubelet node of the lab: containerd, kubelet and kube-proxy run in a lab node's network
namespace (why, and the files: deploy/lab/kubenode.py); this module makes the files and runs, stops
and cleans up the processes.

`teardown` needs nothing but the node's directory and the lab's prefix (never lab.json, which a
failed `up` may not have written): processes by pidfile, then every process left in the lab's
cgroup subtree (containerd's shims and the containers, which outlive containerd), the pods' network
namespaces by the namespace inode of those processes, every mount under the node's directory
(kubelet's volumes and its rshared root, containerd's rootfs and shm), and the cgroup subtree.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import yaml

from deploy.k8s import build
from deploy.lab import kubenode, netns, pki
from deploy.lab.kubenode import NodeFiles
from deploy.lab.process import start_daemon, stop_pidfile, wait_until

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNTIME_CGROUP = "runtime"  # containerd and its shims, in the pids hierarchy, beside kubelet's kubepods
NETNS_DIR = Path("/run/netns")
SHIM_SOCKETS = Path("/run/containerd/s")
CONTAINER_LOGS = Path("/var/log/containers")  # kubelet's links to pod logs: not configurable
MNT_DETACH = 2
STOP_TIMEOUT = 10.0
SOCKET_PATH_MAX = 104  # containerd refuses longer unix socket paths
_LIBC = ctypes.CDLL(None, use_errno=True)


class NodeError(RuntimeError):
    """The real node cannot start or stop; the message says what and where its log is."""


def binaries() -> dict[str, Path]:
    """kubelet and kube-proxy of the pinned release, and Debian's containerd, ctr and runc."""
    found = {name: build.binary_path(name) for name in ("kubelet", "kube-proxy")}
    missing = [name for name, path in found.items() if not path.exists()]
    if missing:
        raise NodeError(f"{' and '.join(missing)} not built in {found[missing[0]].parent}: run `make k8s` "
                        f"(or `{build.BUILD_COMMAND} kubelet kube-proxy`)")
    for tool in ("containerd", "ctr", "runc", "nsenter"):
        path = shutil.which(tool)
        if path is None:
            raise NodeError(f"{tool} is not installed: run `make setup` (apt packages containerd, runc)")
        found[tool] = Path(path)
    return found


class RealNode:
    """One node's kubelet, containerd and kube-proxy; the files under `<node_dir>/kubelet`."""

    def __init__(self, node_dir: Path, *, prefix: str) -> None:
        self.files = NodeFiles(node_dir / "kubelet")
        self.prefix = prefix

    @property
    def cgroup(self) -> str:
        return kubenode.cgroup_name(self.prefix, self.files.root.parent.name)

    # --- making the files -------------------------------------------------------------------------

    def prepare(self, *, node: str, node_ip: str, server: str, apiserver_ca: Path, authority: pki.Authority,
                cni_sources: Sequence[Path], cni_conf_dir: Path) -> None:
        """Every file and directory of the node, its client certificates and the cgroup subtree."""
        files = self.files
        if len(str(files.ttrpc_socket).encode()) > SOCKET_PATH_MAX:
            raise NodeError(f"{files.ttrpc_socket}: too long for a unix socket ({SOCKET_PATH_MAX} bytes at most): "
                            "give the lab a shorter --state-dir")
        for directory in (files.root, files.containerd_dir, files.kubelet_root, files.pod_logs, files.cni_bin, files.pki):
            directory.mkdir(parents=True, exist_ok=True)
        files.containerd_config.write_text(kubenode.containerd_config(files, cni_conf_dir=cni_conf_dir))
        for name, target in kubenode.cni_links(cni_sources).items():
            (files.cni_bin / name).unlink(missing_ok=True)
            (files.cni_bin / name).symlink_to(target)
        shutil.copyfile(authority.path, files.pki / "client-ca.pem")
        for component, user, groups in (("kubelet", f"system:node:{node}", ("system:nodes",)),
                                        ("kube-proxy", "system:kube-proxy", ())):
            cert, key = authority.issue(files.pki, component, common_name=user, organizations=groups, client=True)
            config = kubenode.kubeconfig(server=server, ca_file=apiserver_ca, cert=cert, key=key, user=user)
            path = files.kubelet_kubeconfig if component == "kubelet" else files.proxy_kubeconfig
            path.write_text(yaml.safe_dump(config, sort_keys=False))
        files.kubelet_config.write_text(yaml.safe_dump(kubenode.kubelet_config(files, cgroup=self.cgroup, node_ip=node_ip)))
        files.proxy_config.write_text(yaml.safe_dump(kubenode.proxy_config(files, node=node)))
        make_cgroups(self.cgroup)

    # --- running ----------------------------------------------------------------------------------

    def start_containerd(self, node_netns: str, *, timeout: float = 30) -> None:
        """containerd in the node's namespace, moved into the lab's cgroup (its shims follow it);
        returns once it answers on its socket."""
        files = self.files
        files.socket.unlink(missing_ok=True)
        pid = self._start("containerd", node_netns, [str(binaries()["containerd"]), "--config", str(files.containerd_config)])
        with contextlib.suppress(ProcessLookupError):  # exited at once: its log says why, below
            join_cgroup(self.cgroup, pid)
        wait_until(lambda: self._dead("containerd") or self.ctr("version", check=False).returncode == 0,
                   timeout=timeout, what=f"containerd on {files.socket}", error=NodeError)
        self._check_alive("containerd")

    def restart_containerd(self, node_netns: str) -> None:
        """Stop containerd and wait until the old process is gone (it holds its socket and its
        database lock until then), then start it again. Pods keep running: their shims are apart."""
        stop_pidfile(self.files.pidfile("containerd"), timeout=STOP_TIMEOUT)  # returns once it is gone
        self.start_containerd(node_netns)

    def import_images(self, archives: Iterable[Path]) -> None:
        """Import image archives (OCI or docker-archive tar) into CRI's namespace: nothing is pulled."""
        for archive in archives:
            self.ctr("images", "import", str(archive), timeout=300)

    def images(self) -> list[str]:
        return self.ctr("images", "list", "-q").stdout.split()

    def start_kubelet(self, node_netns: str, *, node: str, node_ip: str) -> None:
        """kubelet, after making the namespace a router as every Kubernetes node is (kube-proxy's
        Service DNAT forwards what pods send through the host shim)."""
        netns.set_sysctl(node_netns, "net.ipv4.ip_forward", "1")
        self._start("kubelet", node_netns, kubenode.kubelet_argv(binaries()["kubelet"], self.files, node=node,
                                                                 node_ip=node_ip))

    def start_proxy(self, node_netns: str) -> None:
        self._start("kube-proxy", node_netns, kubenode.proxy_argv(binaries()["kube-proxy"], self.files))

    def ctr(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        argv = [str(binaries()["ctr"]), "--address", str(self.files.socket), "--namespace",
                kubenode.CONTAINERD_NAMESPACE, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def _start(self, process: str, node_netns: str, argv: list[str]) -> int:
        """`argv` inside the node's network namespace only (nsenter --net: the host's mount namespace,
        see kubenode's docstring)."""
        return start_daemon([str(binaries()["nsenter"]), f"--net={NETNS_DIR / node_netns}", *argv],
                            pidfile=self.files.pidfile(process), logfile=self.files.logfile(process))

    def _dead(self, process: str) -> bool:
        try:
            pid = int(self.files.pidfile(process).read_text())
            return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
        except (FileNotFoundError, ValueError, IndexError):
            return True

    def _check_alive(self, process: str) -> None:
        if self._dead(process):
            raise NodeError(f"{process} exited; end of {self.files.logfile(process)}:\n{self.log_tail(process)}")

    def log_tail(self, process: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.files.logfile(process).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # --- stopping ---------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop and remove everything of the node; fine twice and on a half-made node (see the module
        docstring for the order)."""
        for process in ("kubelet", "kube-proxy"):
            stop_pidfile(self.files.pidfile(process), timeout=STOP_TIMEOUT)
        pids = cgroup_pids(self.cgroup)
        namespaces = {inode for pid in pids if (inode := _netns_inode(pid)) is not None}
        stop_pidfile(self.files.pidfile("containerd"), timeout=STOP_TIMEOUT)
        kill_cgroup(self.cgroup)
        remove_netns_by_inode(namespaces)
        unmount_under(self.files.root)
        remove_shim_sockets(self.files)
        remove_cgroups(self.cgroup)
        for link in CONTAINER_LOGS.glob("*.log") if CONTAINER_LOGS.is_dir() else []:
            if link.is_symlink() and str(os.readlink(link)).startswith(str(self.files.pod_logs)):
                link.unlink(missing_ok=True)
        # gone now, not with the lab's directory: the shims' init.pid files name processes long dead,
        # whose numbers the lab's pidfile sweep (rig.destroy) must never signal
        shutil.rmtree(self.files.root, ignore_errors=True)


# --- cgroups (v1: one tree per hierarchy) -----------------------------------------------------------

def hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """The mounted cgroup hierarchies: v1's (cpu, memory, pids, the named systemd one, ...) and the
    hybrid layout's cgroup2 one (`unified`), where runc places containers too."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] in ("cgroup", "cgroup2"):
            mount = Path(_unescape(fields[0].split()[4]))
            if mount.parent == root:
                found.append(mount)
    return sorted(found)


def make_cgroups(name: str) -> None:
    """`/<name>` in every hierarchy (kubelet refuses a cgroupRoot missing in one), with cpuset's cpus
    and mems from the root: a new cpuset has none, and runc cannot place a process in it then."""
    for hierarchy in hierarchies():
        directory = hierarchy / name
        try:
            directory.mkdir(exist_ok=True)
        except OSError as error:
            raise NodeError(f"cannot make cgroup {directory}: {error.strerror}") from None
        for key in ("cpuset.cpus", "cpuset.mems"):
            if (directory / key).exists() and not (directory / key).read_text().strip():
                (directory / key).write_text((hierarchy / key).read_text())
    runtime = _pids_hierarchy() / name / RUNTIME_CGROUP
    runtime.mkdir(exist_ok=True)


def join_cgroup(name: str, pid: int) -> None:
    """Move `pid` into the lab's runtime cgroup of the pids hierarchy only (what it forks follows)."""
    (_pids_hierarchy() / name / RUNTIME_CGROUP / "cgroup.procs").write_text(str(pid))


def cgroup_pids(name: str) -> set[int]:
    """Every process in the subtree, in any hierarchy. Walked with os.walk, which passes over a
    directory removed meanwhile (runc removes a killed container's cgroups as this runs)."""
    found: set[int] = set()
    for hierarchy in hierarchies():
        for directory, _, names in os.walk(hierarchy / name):
            if "cgroup.procs" in names:
                with contextlib.suppress(OSError):  # removed meanwhile
                    found.update(int(pid) for pid in Path(directory, "cgroup.procs").read_text().split())
    return found


def kill_cgroup(name: str, *, timeout: float = STOP_TIMEOUT) -> None:
    """SIGKILL every process in the subtree until none is left (a shim may fork as it dies)."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(name):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise NodeError(f"processes {sorted(pids)} of cgroup {name} survive SIGKILL")
        time.sleep(0.05)


def remove_cgroups(name: str) -> None:
    """The subtree, deepest first, in every hierarchy (once its processes are gone)."""
    for hierarchy in hierarchies():
        for directory, _, _ in os.walk(hierarchy / name, topdown=False):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile by runc
                os.rmdir(directory)


def _pids_hierarchy() -> Path:
    for hierarchy in hierarchies():
        if "pids" in hierarchy.name.split(","):
            return hierarchy
    raise NodeError("no cgroup v1 pids hierarchy under /sys/fs/cgroup: the lab's real node needs cgroup v1")


# --- namespaces and mounts ------------------------------------------------------------------------

def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def remove_netns_by_inode(inodes: set[int]) -> None:
    """The namespaces containerd pinned under /run/netns for the node's pods (named cni-<uuid>), told
    from everyone else's by their inode, which the pods' processes showed."""
    for path in NETNS_DIR.glob("cni-*"):
        try:
            inode = path.stat().st_ino
        except OSError:
            continue
        if inode in inodes:
            _umount(path)
            path.unlink(missing_ok=True)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below `directory`, deepest first."""
    top = str(directory.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == top or point.startswith(top + "/"):
            points.append(Path(point))
    return sorted(points, key=lambda p: -len(p.parts))


def unmount_under(directory: Path) -> None:
    """Unmount everything under `directory` (again while some remain: a shared mount may show up
    twice), so removing the directory never reaches into a mounted filesystem."""
    for _ in range(10):
        points = mounts_under(directory) if directory.exists() else []
        if not points:
            return
        for point in points:
            _umount(point)
    raise NodeError(f"mounts left under {directory}: {', '.join(map(str, mounts_under(directory)))}")


def _umount(path: Path) -> None:
    if _LIBC.umount2(str(path).encode(), MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        if errno not in (22, 2):  # EINVAL: not a mount point (any more); ENOENT: gone
            raise NodeError(f"umount {path}: {os.strerror(errno)}")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def remove_shim_sockets(files: NodeFiles) -> None:
    """The sockets of killed shims: containerd 1.6 puts them in /run/containerd/s whatever its config,
    named sha256(<containerd address>/<namespace>/<sandbox id>), the ids being its task directories."""
    tasks = files.containerd_dir / "state" / "io.containerd.runtime.v2.task" / kubenode.CONTAINERD_NAMESPACE
    for task in tasks.iterdir() if tasks.is_dir() else []:
        name = hashlib.sha256(f"{files.socket}/{kubenode.CONTAINERD_NAMESPACE}/{task.name}".encode()).hexdigest()
        (SHIM_SOCKETS / name).unlink(missing_ok=True)
    for directory in (SHIM_SOCKETS, SHIM_SOCKETS.parent):
        with contextlib.suppress(OSError):  # not empty: another containerd's
            directory.rmdir()


def node_dirs(workdir: Path) -> Iterator[Path]:
    """The lab's node directories that hold a real node (`<lab>/nodes/<node>/kubelet`)."""
    yield from (path.parent for path in sorted((workdir / "nodes").glob("*/kubelet")))


def cluster_authority(directory: Path) -> pki.Authority:
    """The CA whose client certificates the API server accepts (`--client-ca-file`) and kubelet
    trusts: made once per lab, its key kept beside it so `up` can sign each node's certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_file = directory / "ca.key"
    if key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        path = directory / "ca.pem"
        return pki.Authority(x509.load_pem_x509_certificate(path.read_bytes()), key, path)
    authority = pki.Authority.create(directory, name="underlay lab cluster CA")
    key_file.touch(mode=0o600)
    key_file.write_bytes(authority.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return authority
