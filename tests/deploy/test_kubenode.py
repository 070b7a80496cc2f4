"""The real node's files (deploy/lab/kubenode.py), read back the way containerd and kubelet read them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from deploy.lab import kubenode
from deploy.lab.kubenode import NodeFiles

FILES = NodeFiles(Path("/run/lab/ul1234/nodes/node1/kubelet"))


def test_containerd_keeps_everything_under_the_node_and_never_lowers_oom_scores():
    config = tomllib.loads(kubenode.containerd_config(FILES, cni_conf_dir=Path("/run/lab/net.d")))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert config["version"] == 2
    assert all(str(FILES.root) in path for path in (config["root"], config["state"], config["grpc"]["address"],
                                                    config["plugins"]["io.containerd.internal.v1.opt"]["path"]))
    assert cri["restrict_oom_score_adj"] is True  # else runc: "can't get final child's PID from pipe"
    assert cri["sandbox_image"] == "localhost/pause:3.10"
    assert cri["cni"] == {"bin_dir": str(FILES.cni_bin), "conf_dir": "/run/lab/net.d", "max_conf_num": 1}
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"SystemdCgroup": False, "Root": str(FILES.containerd_dir / "runc")}


def test_kubelet_uses_cgroupfs_on_cgroup_v1_under_the_labs_own_cgroup_root():
    config = kubenode.kubelet_config(FILES, cgroup=kubenode.cgroup_name("ul1234", "node1"), node_ip="198.18.0.11")
    assert (config["cgroupDriver"], config["failCgroupV1"], config["cgroupRoot"]) == ("cgroupfs", False, "/underlay-ul1234-node1")
    assert config["containerRuntimeEndpoint"] == f"unix://{FILES.socket}"
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["imageGCHighThresholdPercent"] == 100  # imported images cannot be pulled back
    argv = kubenode.kubelet_argv(Path("/bin/kubelet"), FILES, node="node1", node_ip="198.18.0.11")
    assert "--hostname-override=node1" in argv and f"--root-dir={FILES.kubelet_root}" in argv


def test_certificates_name_the_node_for_the_node_authorizer():
    args = kubenode.apiserver_args(Path("/ca.pem"))
    assert "--authorization-mode=Node" in args and "--enable-admission-plugins=NodeRestriction" in args
    config = kubenode.kubeconfig(server="https://127.0.0.1:6443", ca_file=Path("/a.crt"), cert=Path("/c.pem"),
                                 key=Path("/c.key"), user="system:node:node1")
    assert config["users"][0] == {"name": "system:node:node1",
                                  "user": {"client-certificate": "/c.pem", "client-key": "/c.key"}}


def test_one_cni_bin_dir_links_ours_before_the_reference_plugins(tmp_path):
    ours, reference = tmp_path / "ours", tmp_path / "reference"
    for directory, names in ((ours, ("underlay", "tuning")), (reference, ("tuning", "loopback"))):
        directory.mkdir()
        for name in names:
            (directory / name).touch()
    links = kubenode.cni_links([ours, reference, tmp_path / "missing"])
    assert links == {"underlay": ours / "underlay", "tuning": ours / "tuning", "loopback": reference / "loopback"}
