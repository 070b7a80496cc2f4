"""deploy/k8s/testenv.py and its fixtures, on the real control plane: the controllers and the
scheduler really work, a watch without a resource version works on Debian's etcd, and no start or
stop (clean, failed, or a session killed outright) leaves a process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kubernetes import client, watch

from deploy.k8s import build
from deploy.k8s.testenv import PROCESSES, ControlPlane, MissingBinary, StartFailed, find_binaries
from deploy.lab.process import wait_until

REPO = Path(__file__).resolve().parents[3]


def ps_lines(word: str) -> list[str]:
    """Processes whose command line mentions `word` (a control plane's directory name)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if word in line and "ps -eo" not in line]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# --- the session's control plane ---------------------------------------------------------------

def test_the_apiserver_is_the_pinned_release_over_verified_tls(k8s):
    assert client.VersionApi(k8s.api).get_code().git_version == "v1.36.3"
    assert k8s.api.configuration.verify_ssl and k8s.api.configuration.ssl_ca_cert
    assert k8s.api.configuration.host.startswith("https://127.0.0.1:")


def test_a_new_namespace_gets_its_service_account_and_admits_pods(k8s, k8s_namespace):
    core = client.CoreV1Api(k8s.api)
    pod = core.create_namespaced_pod(k8s_namespace, pod_manifest("p"))
    assert pod.spec.service_account_name == "default"


def pod_manifest(name: str, *, node_selector: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/pause"}],
                     "terminationGracePeriodSeconds": 0, "nodeSelector": node_selector}}


def test_the_statefulset_controller_makes_pods_the_scheduler_binds_and_the_garbage_collector_deletes(
        k8s, k8s_namespace):
    core, apps = client.CoreV1Api(k8s.api), client.AppsV1Api(k8s.api)
    node = f"node-{k8s_namespace}"
    k8s.create_node(node, labels={"underlay.test/for": k8s_namespace})
    template = pod_manifest("web", node_selector={"underlay.test/for": k8s_namespace})
    apps.create_namespaced_stateful_set(k8s_namespace, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "podManagementPolicy": "Parallel", "serviceName": "web",
                 "selector": {"matchLabels": {"app": "web"}}, "template": template}})

    def bound() -> dict[str, str]:
        pods = core.list_namespaced_pod(k8s_namespace).items
        return {p.metadata.name: p.spec.node_name for p in pods if p.spec.node_name}

    assert wait_until(lambda: len(bound()) == 2 and bound(), timeout=30, what="two bound pods") == {"web-0": node, "web-1": node}
    owner = core.read_namespaced_pod("web-0", k8s_namespace).metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("StatefulSet", "web")

    apps.delete_namespaced_stateful_set("web", k8s_namespace, propagation_policy="Background")
    wait_until(lambda: not core.list_namespaced_pod(k8s_namespace).items, timeout=30, what="the garbage collector")
    core.delete_node(node)


def test_a_watch_without_resource_version_gets_its_events(k8s, k8s_namespace):
    """Debian's etcd 3.4 and the apiserver's watch cache: the last write was to another resource, so
    the config maps' cache is behind etcd's revision until etcd sends a progress notification; without
    them this watch fails with `504 Too large resource version`."""
    core = client.CoreV1Api(k8s.api)
    core.create_namespaced_config_map(k8s_namespace, {"metadata": {"name": "before"}})
    core.create_namespaced_secret(k8s_namespace, {"metadata": {"name": "elsewhere"}})
    names = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, k8s_namespace, timeout_seconds=20):
        names.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "before":
            core.create_namespaced_config_map(k8s_namespace, {"metadata": {"name": "after"}})
        if event["object"].metadata.name == "after":
            break
    assert [name for name in names if name[1] != "kube-root-ca.crt"] == [("ADDED", "before"), ("ADDED", "after")]


def test_controller_manager_and_scheduler_run_and_every_process_is_measured(k8s):
    assert set(k8s.plane.rss()) == set(PROCESSES)
    assert all(alive(pid) for pid in k8s.plane.pids().values())
    assert 0 < k8s.plane.ready_seconds < 90


# --- starting and stopping -----------------------------------------------------------------------

def test_stop_leaves_no_process_and_no_directory():
    plane = ControlPlane.temporary().start()
    pids = plane.pids()
    assert set(pids) == set(PROCESSES) and all(alive(pid) for pid in pids.values())
    plane.stop()
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert ps_lines(plane.directory.name) == []
    assert not plane.directory.exists()
    plane.stop()  # twice is fine


def test_a_failed_start_names_the_cause_and_leaves_no_process():
    plane = ControlPlane.temporary(extra_args={"kube-apiserver": ["--no-such-flag"]})
    try:
        with pytest.raises(StartFailed, match=r"(?s)kube-apiserver exited.*unknown flag: --no-such-flag"):
            plane.start()
        assert (plane.directory / "etcd.log").exists(), "etcd was not started before the apiserver failed"
        assert plane.pids() == {}, "a pidfile (so a process) is left"
        assert not any(alive(int(line.split()[0])) for line in ps_lines(plane.directory.name))
    finally:
        plane.stop()


def test_a_killed_session_leaves_no_process_and_the_next_one_sweeps_its_directory():
    code = textwrap.dedent("""
        import json, sys, time
        from deploy.k8s.testenv import ControlPlane
        plane = ControlPlane.temporary().start()
        print(json.dumps({"pids": plane.pids(), "directory": str(plane.directory)}), flush=True)
        time.sleep(600)
    """)
    session = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None
        started = json.loads(session.stdout.readline())
    finally:
        session.kill()
        session.wait()
    pids = started["pids"]
    assert set(pids) == set(PROCESSES)
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), timeout=15, what="orphans to die")
    assert ps_lines(Path(started["directory"]).name) == []
    ControlPlane.temporary().stop()  # a new one sweeps directories whose owner is gone
    assert not Path(started["directory"]).exists()


def test_missing_etcd_names_the_package(tmp_path):
    with pytest.raises(MissingBinary, match=r"etcd is not installed: run `make setup` \(or `apt-get install etcd-server`\)"):
        find_binaries(environ={"PATH": str(tmp_path)})


def test_missing_kubernetes_binaries_name_the_build_command(tmp_path):
    with pytest.raises(MissingBinary) as missing:
        find_binaries(environ={"PATH": os.environ["PATH"], build.CACHE_ENV: str(tmp_path)})
    assert str(missing.value) == (
        f"kube-apiserver, kube-controller-manager, kube-scheduler not built in {tmp_path / 'v1.36.3'}: run "
        "`make k8s` (or `python -m deploy.k8s.build kube-apiserver kube-controller-manager kube-scheduler`)")


def test_the_fixture_fails_with_that_line_rather_than_skipping(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ("deploy.k8s.pytest_plugin",)\n')
    (tmp_path / "test_uses_k8s.py").write_text("def test_it(k8s):\n    pass\n")
    env = {**os.environ, build.CACHE_ENV: str(tmp_path / "empty"), "PYTHONPATH": str(REPO), "COLUMNS": "400"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout
    assert "1 error" in run.stdout and "skipped" not in run.stdout
    assert "Failed: kube-apiserver, kube-controller-manager, kube-scheduler not built in" in run.stdout
