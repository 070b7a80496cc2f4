"""deploy/k8s/build.py: the pinned module, the Go environment, and real `go build`s of a tiny stand-in
for k8s.io/kubernetes (a local module of the same path), so locking, skipping, renaming into place and
failure reporting are exercised in seconds rather than the real ten minutes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.k8s import build
from deploy.k8s.build import BuildError, Module

REPO = Path(__file__).resolve().parents[3]


def test_the_pinned_module_builds_the_six_binaries_of_one_release():
    module = Module.read()
    assert module.version == "v1.36.3"
    assert set(module.packages) == {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                                    "kube-proxy", "kubectl"}
    assert module.packages["kube-apiserver"] == "k8s.io/kubernetes/cmd/kube-apiserver"


def test_components_are_named_with_or_without_the_kube_prefix():
    module = Module.read()
    assert module.resolve(["apiserver", "kube-apiserver", "kubelet", "scheduler"]) == [
        "kube-apiserver", "kubelet", "kube-scheduler"]
    assert module.resolve(["kubectl"]) == ["kubectl"]
    with pytest.raises(BuildError, match=r"unknown component 'kubeadm': go.mod builds kube-apiserver, "):
        module.resolve(["kubeadm"])


def test_the_cache_is_keyed_by_version_and_its_root_can_be_moved(tmp_path):
    assert build.cache_dir("v1.36.3", environ={}) == Path.home() / ".cache/underlay/k8s/v1.36.3"
    assert build.cache_dir("v1.36.3", environ={build.CACHE_ENV: str(tmp_path)}) == tmp_path / "v1.36.3"


def test_go_126_builds_with_the_local_toolchain_and_modules_from_the_proxy():
    env = build.build_env((1, 26), environ={"GOFLAGS": "-mod=vendor", "GOTOOLCHAIN": "auto"})
    assert env["GOTOOLCHAIN"] == "local" and env["GOFLAGS"] == "-mod=mod"
    assert "GOEXPERIMENT" not in env


def test_go_127_turns_json_v2_off_and_keeps_other_experiments():
    env = build.build_env((1, 27), environ={"GOEXPERIMENT": "jsonv2,greenteagc"})
    assert env["GOEXPERIMENT"] == "greenteagc,nojsonv2"
    assert build.build_env((1, 28), environ={})["GOEXPERIMENT"] == "nojsonv2"


def test_go_older_than_the_module_needs_is_refused():
    with pytest.raises(BuildError, match=r"Go 1.25 is too old: k8s.io/kubernetes needs Go 1.26"):
        build.build_env((1, 25), environ={})


def test_no_go_fails_naming_what_to_install(tmp_path):
    with pytest.raises(BuildError, match=r"no Go toolchain .*install Go 1.26"):
        build.find_go(environ={"PATH": str(tmp_path)}, fallback=tmp_path / "go")


def test_the_machines_go_is_found_and_new_enough():
    assert build.go_version(build.find_go()) >= build.MIN_GO


def test_an_unknown_component_on_the_command_line_exits_1_with_the_list(capsys):
    assert build.main(["kubeadm"]) == 1
    assert "unknown component 'kubeadm'" in capsys.readouterr().err


# --- real go builds of a stand-in module ---------------------------------------------------------

@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    """A module laid out like deploy/k8s/bin whose k8s.io/kubernetes is a local two-command stand-in."""
    root = tmp_path / "module"
    kube = root / "kube"
    for name in ("kube-apiserver", "kube-scheduler"):
        (kube / "cmd" / name).mkdir(parents=True)
        (kube / "cmd" / name / "main.go").write_text(
            f'package main\n\nimport "fmt"\n\nfunc main() {{ fmt.Println("{name} stand-in") }}\n')
    (kube / "go.mod").write_text("module k8s.io/kubernetes\n\ngo 1.26.0\n")
    (root / "go.mod").write_text(
        "module underlay.io/k8s-bin-test\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.99.1\n\n"
        "replace k8s.io/kubernetes => ./kube\n\n"
        "tool (\n\tk8s.io/kubernetes/cmd/kube-apiserver\n\tk8s.io/kubernetes/cmd/kube-scheduler\n)\n")
    return root


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, build.CACHE_ENV: str(tmp_path / "cache")}


def test_a_binary_is_built_once_into_the_versioned_cache(module_dir, cache):
    lines: list[str] = []
    paths = build.ensure(["apiserver"], environ=cache, module_dir=module_dir, log=lines.append)
    target = Path(cache[build.CACHE_ENV]) / "v1.99.1"
    assert paths == {"kube-apiserver": target / "kube-apiserver"}
    assert subprocess.run([paths["kube-apiserver"]], capture_output=True, text=True).stdout == "kube-apiserver stand-in\n"
    assert lines[0].startswith("k8s: building kube-apiserver (v1.99.1, go1.") and lines[-1].startswith("k8s: built ")
    assert not list(target.glob(".build-*")), "the temporary build directory is left behind"

    again: list[str] = []
    assert build.ensure(["kube-apiserver"], environ=cache, module_dir=module_dir, log=again.append) == paths
    assert again == [], "a cached binary was built again"


def test_concurrent_callers_wait_for_one_build(module_dir, cache):
    """Two callers start while a third party holds the lock: both wait, one builds, the other finds the
    binary made and builds nothing."""
    target = Path(cache[build.CACHE_ENV]) / "v1.99.1"
    target.mkdir(parents=True)
    code = ("import sys; from pathlib import Path; from deploy.k8s.build import ensure; "
            "ensure(['scheduler'], module_dir=Path(sys.argv[1]), log=lambda l: print(l, flush=True))")
    with open(target / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        callers = [subprocess.Popen([sys.executable, "-c", code, str(module_dir)], cwd=REPO, env=cache,
                                    stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for caller in callers:  # each blocks on the lock before this test lets go
            assert caller.stdout is not None
            assert "waiting for it" in caller.stdout.readline()
        fcntl.flock(lock, fcntl.LOCK_UN)
    outputs = [caller.communicate(timeout=120)[0] for caller in callers]
    assert [caller.returncode for caller in callers] == [0, 0]
    assert sum(out.count("k8s: building kube-scheduler") for out in outputs) == 1, outputs
    assert (target / "kube-scheduler").exists()


def test_a_failed_build_names_the_error_and_leaves_nothing(module_dir, cache):
    (module_dir / "kube/cmd/kube-scheduler/main.go").write_text("package main\n\nfunc main() { undefined() }\n")
    with pytest.raises(BuildError) as failure:
        build.ensure(["scheduler"], environ=cache, module_dir=module_dir, log=lambda line: None)
    assert "go build failed (exit 1)" in str(failure.value)
    assert "main.go:3:15: undefined: undefined" in str(failure.value)
    target = Path(cache[build.CACHE_ENV]) / "v1.99.1"
    assert sorted(path.name for path in target.iterdir()) == [".lock", "build.log"]


def test_binaries_are_stripped_and_stamped_with_their_release():
    flags = build.ldflags("v1.36.3").split()
    assert flags[:2] == ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for stamp in ("gitVersion=v1.36.3", "gitMajor=1", "gitMinor=36"):
            assert f"{package}.{stamp}" in flags
