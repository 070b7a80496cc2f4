"""Boot User-Mode Linux on the host's own filesystem and run one command inside it.

This machine's kernel has no ipvlan; Debian's `user-mode-linux` ships a Linux 6.1 that runs as an
ordinary program with ipvlan.ko, openvswitch.ko, veth.ko and tun.ko beside it. It boots the host's
`/` through hostfs in a couple of seconds, so the project, its venv, pytest and Open vSwitch are all
there without building an image.

Safety: the root is mounted read-only and tmpfs covers /run, /tmp and /var/tmp inside UML (hiding the
host's /run/netns too). The one host path UML writes is `workdir`, mounted as `INNER_HOST_DIR`: the
init script, console log, boot time stamp, exit status and whatever the command leaves for the host.
The instance runs in its own process group, killed when the command ends or its time is up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.lab import netns as lab_netns

LINUX_UML = Path("/usr/bin/linux.uml")
MODULES_ROOT = Path("/usr/lib/uml/modules")
DEFAULT_MODULES = ("tun", "veth", "ipvlan", "macvlan", "openvswitch", "8021q")  # 8021q: VLAN pools
INNER_HOST_DIR = "/run/uml-host"  # inside UML: the host's `workdir`, the only host path UML writes
MODROOT = "/run/uml-modroot"  # inside UML: lib/modules/<version> -> the package's module directory
PACKAGE_HINT = "install the Debian package user-mode-linux (`make setup`)"


class MissingUml(RuntimeError):
    """User-Mode Linux is not installed; the message names the package."""


@dataclass(frozen=True)
class Kernel:
    binary: Path
    modules: Path  # MODULES_ROOT/<version>, matching what the binary reports

    @property
    def version(self) -> str:
        return self.modules.name


def find_kernel(binary: Path = LINUX_UML, modules_root: Path = MODULES_ROOT) -> Kernel:
    """The UML kernel and its module directory, asking the binary for its version."""
    if not os.access(binary, os.X_OK):
        raise MissingUml(f"{binary} not found: {PACKAGE_HINT}")
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    modules = modules_root / version
    if not version or not (modules / "modules.dep").exists():
        raise MissingUml(f"no modules for UML {version or '(unknown version)'} under {modules_root}: "
                         f"{PACKAGE_HINT}")
    return Kernel(binary, modules)


@dataclass(frozen=True)
class UmlResult:
    returncode: int | None  # the command's exit status; None if it never finished
    console: str  # UML's console: kernel messages and the command's output
    boot_seconds: float | None  # from starting linux.uml to the first line of init
    wall_seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.console.splitlines()[-lines:])


HIDDEN_BY_TMPFS = (Path("/run"), Path("/tmp"), Path("/var/tmp"))

INIT_TEMPLATE = """\
#!/bin/sh
# PID 1 inside User-Mode Linux, written by deploy.uml. The root is the host's / (hostfs, read-only);
# tmpfs takes every write except to {host_dir}, which is the host's {workdir}.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mkdir {host_dir} && mount -t hostfs -o {workdir} hostfs {host_dir}
{mounts}date +%s.%N > {host_dir}/booted
mkdir -p {modroot}/lib/modules && ln -s {moddir} {modroot}/lib/modules/{version}
printf '#!/bin/sh\\nexec /sbin/modprobe -d {modroot} "$@"\\n' > {modroot}/modprobe
chmod 755 {modroot}/modprobe && echo {modroot}/modprobe > /proc/sys/kernel/modprobe
modprobe -d {modroot} -a {modules}
ip link set lo up
cd {cwd}
{exports}
(
{command}
) </dev/null
echo $? > {host_dir}/status
sync
echo o > /proc/sysrq-trigger
sleep 60
"""


class UmlInstance:
    """One boot of UML that runs `command` (a shell snippet, or an argv) and powers off.

    `taps` are host tap devices, given to UML as eth0, eth1, ... in order; they live in namespace
    `netns` (so must the UML process, to open them), never in the host's own.
    """

    def __init__(self, workdir: Path, *, command: str | Sequence[str], mem: str = "768M",
                 taps: Sequence[str] = (), netns: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, modules: Sequence[str] = DEFAULT_MODULES,
                 kernel: Kernel | None = None, shared: Mapping[Path, bool] | None = None) -> None:
        if taps and not netns:
            raise ValueError("tap devices for UML must live in a namespace of ours, never the host's own")
        self.workdir = Path(workdir).resolve()
        self.command = command if isinstance(command, str) else shlex.join(command)
        self.mem = mem
        self.taps = list(taps)
        self.netns = netns
        self.env = dict(env or {})
        self.cwd = Path(cwd or Path.cwd()).resolve()
        self.modules = list(modules)
        self.kernel = kernel or find_kernel()
        self.umid = f"underlay-{secrets.token_hex(4)}"
        self.shared = {Path(path).resolve(): writable for path, writable in (shared or {}).items()}

    def _mounts(self) -> str:
        """Host directories seen at their own paths inside: `shared` ({path: writable}), and the
        checkout read-only when it lies under /tmp, /run or /var/tmp (CI clones land anywhere),
        which the tmpfs mounts would hide. Parents first, so a writable child sits on a read-only parent."""
        mounts = dict(self.shared)
        if any(self.cwd.is_relative_to(hidden) for hidden in HIDDEN_BY_TMPFS):
            mounts.setdefault(self.cwd, False)
        lines = []
        for path in sorted(mounts, key=lambda p: len(p.parts)):
            quoted = shlex.quote(str(path))
            lines.append(f"mkdir -p {quoted} && mount {'' if mounts[path] else '-r '}-t hostfs -o {quoted} "
                         f"hostfs {quoted}\n")
        return "".join(lines)

    def init_script(self) -> str:
        return INIT_TEMPLATE.format(
            host_dir=INNER_HOST_DIR, workdir=shlex.quote(str(self.workdir)), modroot=MODROOT,
            moddir=shlex.quote(str(self.kernel.modules)), version=shlex.quote(self.kernel.version),
            modules=shlex.join(self.modules), cwd=shlex.quote(str(self.cwd)), command=self.command,
            mounts=self._mounts(),
            exports="\n".join(f"export {key}={shlex.quote(value)}" for key, value in self.env.items()),
        )

    def argv(self) -> list[str]:
        argv = [
            str(self.kernel.binary), f"mem={self.mem}", "root=/dev/root", "rootfstype=hostfs", "rootflags=/",
            "ro", "quiet", f"init={self.workdir / 'init.sh'}", "con=null", "con0=fd:0,fd:1",
            f"umid={self.umid}", f"uml_dir={self.workdir}",
            *(f"eth{n}=tuntap,{tap}" for n, tap in enumerate(self.taps)),
        ]
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def run(self, timeout: float = 120) -> UmlResult:
        """Boot, run the command, power off; kill the instance if it is not done within `timeout`."""
        started = time.time()
        proc = self._launch()
        try:
            timed_out = not _wait(proc, timeout)
        finally:
            _kill_group(proc)
            shutil.rmtree(self.workdir / self.umid, ignore_errors=True)  # a killed UML leaves its pid file
        return UmlResult(
            returncode=_read_int(self.workdir / "status"),
            console=self.console_path.read_text(errors="replace"),
            boot_seconds=_seconds_since(started, self.workdir / "booted"),
            wall_seconds=time.time() - started,
            timed_out=timed_out,
        )

    def start(self, pidfile: Path) -> int:
        """Boot and leave the instance running (a lab's node): its pid, which leads the process group
        of all its host processes, goes to `pidfile`, for `deploy.lab.process.stop_pidfile`."""
        pid = self._launch().pid
        pidfile.write_text(str(pid))
        return pid

    @property
    def console_path(self) -> Path:
        return self.workdir / "console.log"

    def _launch(self) -> subprocess.Popen[bytes]:
        """Write the init script and start linux.uml in its own session, console to console.log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in ("booted", "status"):
            (self.workdir / stale).unlink(missing_ok=True)
        init = self.workdir / "init.sh"
        init.write_text(self.init_script())
        init.chmod(0o755)
        with open(self.console_path, "wb") as console:
            return subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def tap_device(ns: str, name: str) -> Iterator[str]:
    """A persistent tap `name` in namespace `ns`, up, for UmlInstance(taps=[name], netns=ns); removed after."""
    try:
        lab_netns.add_tap(ns, name)
        yield name
    finally:
        lab_netns.delete_link(ns, name)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the instance's process group: UML's kernel and the host processes of its userspace."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < deadline:  # orphans, until their reaper waits
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _seconds_since(started: float, stamp: Path) -> float | None:
    """Seconds from `started` to the time written in `stamp` (UML's clock is the host's)."""
    try:
        return float(stamp.read_text()) - started
    except (FileNotFoundError, ValueError):
        return None
