"""deploy/kubernetes agrees with the code (pure: no cluster, no root). Each workload's own config
loader runs on exactly the arguments, environment and mounted files its manifest gives it (podsim),
so a path, port, key or flag that drifts from the code fails here, not on a node."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from cni import install, plugin, spec
from controller import config as controller_config
from controller import main as controller_main
from deploy.k8s import manifests
from deploy.lab.pki import Authority
from node_agent import main as agent_main
from node_agent.controller_client import ControllerClient
from podsim import lay_out

NAMESPACE = "underlay-system"
IMAGE = "localhost/underlay:dev"
NODE_IP = "198.18.0.11"
CLUSTER_IP = "192.0.2.10"

controller = manifests.find("Deployment", "underlay-controller")
agent = manifests.find("DaemonSet", "underlay-agent")
rest = manifests.find("Service", "underlay-controller")
openflow = manifests.find("Service", "underlay-controller-openflow")


def service_env(service: dict) -> dict[str, str]:
    """What Kubernetes puts in the environment of a pod of the Service's namespace (enableServiceLinks)."""
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    return {f"{prefix}_SERVICE_HOST": CLUSTER_IP, f"{prefix}_SERVICE_PORT": str(service["spec"]["ports"][0]["port"])}


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict[str, bytes]:
    """The Secret underlay-controller-tls and the CA ConfigMap as README.md makes them."""
    directory = tmp_path_factory.mktemp("pki")
    authority = Authority.create(directory)
    cert, key = authority.issue(directory, "controller", ip=NODE_IP)
    return {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": authority.path.read_bytes()}


def test_the_kustomization_lists_every_manifest_and_every_crd():
    listed = {path.relative_to(manifests.MANIFEST_DIR) for path in manifests.files()}
    present = {path.relative_to(manifests.MANIFEST_DIR) for path in manifests.MANIFEST_DIR.rglob("*.yaml")}
    assert listed == present - {Path("kustomization.yaml")}


def test_every_object_is_in_the_namespace_or_cluster_scoped():
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in manifests.objects():
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in cluster_scoped else NAMESPACE), obj["metadata"]


def test_every_container_runs_our_image_and_never_pulls_it_when_present():
    kustomization = yaml.safe_load((manifests.MANIFEST_DIR / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": IMAGE.split(":")[0], "newTag": IMAGE.split(":")[1]}]
    for workload in (controller, agent):
        pod = workload["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert (container["image"], container["imagePullPolicy"]) == (IMAGE, "IfNotPresent"), container["name"]


def test_the_controller_loads_its_config_from_the_deployment_as_written(tmp_path, tls):
    made = lay_out(controller, "controller", tmp_path, downward={"metadata.name": "underlay-controller-abc",
                   "metadata.namespace": NAMESPACE, "status.podIP": NODE_IP},
                   secrets={"underlay-controller-tls": tls})  # fmt: skip
    config = controller_main.load_config(controller_main.parse_args(made.argv()))
    assert config.store == controller_config.KUBERNETES_STORE
    assert (config.api.host, config.openflow.host) == (NODE_IP, NODE_IP)
    assert Path(config.api.tls_cert).read_bytes() == tls["tls.crt"] and config.api.scheme == "https"
    assert config.kubernetes is not None and config.kubernetes.in_cluster
    assert made.env["POD_NAME"] == "underlay-controller-abc" and made.env["NAMESPACE"] == NAMESPACE
    ports = {p["name"]: p["containerPort"] for p in made.spec["ports"]}
    assert ports == {"api": config.api.port, "openflow": config.openflow.port}
    assert (config.api.port, config.openflow.port) == (controller_config.ApiConfig().port,
                                                       controller_config.OpenFlowConfig().port)


def test_the_controller_config_keeps_the_agreed_leader_election_and_agent_auth():
    toml = tomllib.loads(manifests.find("ConfigMap", "underlay-controller")["data"]["controller.toml"])
    assert toml["kubernetes"] == {
        "in_cluster": True, "leader_election": True, "lease_name": "underlay-controller", "lease_namespace": NAMESPACE,
        "lease_duration": 15, "renew_deadline": 10, "retry_period": 2, "agent_auth": "tokenreview"}


def test_the_controller_probes_and_services_use_its_ports():
    container = controller["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v1/health", "port": "api", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/ready", "port": "api", "scheme": "HTTPS"}
    assert [(p["port"], named[p["targetPort"]]) for p in rest["spec"]["ports"]] == [(6680, 6680)]
    assert [(p["port"], named[p["targetPort"]]) for p in openflow["spec"]["ports"]] == [(6653, 6653)]
    labels = controller["spec"]["template"]["metadata"]["labels"]
    for service in (rest, openflow):
        assert service["spec"]["selector"].items() <= labels.items()
    assert openflow["spec"]["clusterIP"] == "None" and openflow["spec"]["publishNotReadyAddresses"] is True


def test_the_controller_runs_on_the_host_network_as_two_spread_replicas():
    pod = controller["spec"]["template"]["spec"]
    assert controller["spec"]["replicas"] == 2 and pod["hostNetwork"] is True
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"].items() <= controller["spec"]["template"]["metadata"]["labels"].items()
    assert controller["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0  # a replica's ports are its node's


def agent_container(tmp_path: Path, tls: dict[str, bytes]):
    return lay_out(agent, "agent", tmp_path, downward={"spec.nodeName": "node-1"},
                   config_maps={"underlay-ca": {"ca.crt": tls["ca.crt"].decode()}}, service_env=service_env(rest))


def test_the_agent_loads_its_config_from_the_daemonset_as_written(tmp_path, tls):
    made = agent_container(tmp_path, tls)
    config = agent_main.load_config(made.argv())
    root = str(tmp_path)
    assert config.node == "node-1"
    assert config.controller_url == f"https://{rest['metadata']['name']}.{NAMESPACE}.svc:{rest['spec']['ports'][0]['port']}"
    assert config.controller_address == CLUSTER_IP
    assert config.socket == root + plugin.DEFAULT_SOCKET  # where the plugin on the host looks
    assert config.state_dir == root + agent_main.AgentConfig.state_dir
    assert Path(config.token_file).read_bytes() == b"a-projected-token"
    ControllerClient(config.controller_url, config.node, token="t", ca_file=config.ca_file,
                     connect_to=config.controller_address)  # the CA file loads


def test_the_agent_token_is_the_agreed_projected_one_and_no_api_token():
    pod = agent["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    token = next(v for v in pod["volumes"] if v["name"] == "token")["projected"]["sources"][0]["serviceAccountToken"]
    assert f"{mounts['token']}/{token['path']}" == "/var/run/secrets/underlay/token"
    assert (token["audience"], token["expirationSeconds"]) == ("underlay", 3600)
    assert pod["automountServiceAccountToken"] is False
    assert manifests.find("ServiceAccount", "underlay-agent")["automountServiceAccountToken"] is False


def test_the_agent_sees_new_pod_namespaces_and_keeps_its_state_on_the_host():
    pod = agent["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    assert volumes[mounts["/var/run/netns"]["name"]]["hostPath"]["path"] == "/var/run/netns"
    run = volumes[mounts["/run/underlay"]["name"]]["hostPath"]["path"]
    assert Path(plugin.DEFAULT_SOCKET).parent == Path(run) and Path(agent_main.AgentConfig.state_dir).parent == Path(run)
    assert pod["hostNetwork"] is True and pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["containers"][0]["env"][0] == {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}


def test_the_init_container_installs_the_plugin_and_a_valid_conflist_as_written(tmp_path, tls):
    made = lay_out(agent, "install-cni", tmp_path, downward={}, init=True)
    assert made.spec["command"] == ["python", "-m", "cni.install"]
    assert install.main(made.argv()) == 0
    bin_dir, conf_dir = tmp_path / "opt/cni/bin", tmp_path / "etc/cni/net.d"
    assert (bin_dir / install.PLUGIN_NAME).exists()
    conflist = json.loads((conf_dir / install.CONFLIST_NAME).read_text())
    ours = conflist["plugins"][0]
    assert ours["agentSocket"] == plugin.DEFAULT_SOCKET and ours["type"] == install.PLUGIN_NAME
    assert ours["serviceCIDR"] == manifests.find("ConfigMap", "underlay-agent")["data"]["service-cidr"].split(",")
    spec.validate_config({**ours, "name": conflist["name"], "cniVersion": conflist["cniVersion"]})
    pod = agent["spec"]["template"]["spec"]
    hostpaths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: hostpaths[m["name"]] for m in made.spec["volumeMounts"]}
    assert mounts == {"/opt/cni/bin": "/opt/cni/bin", "/etc/cni/net.d": "/etc/cni/net.d"}  # the host's own paths
    assert "--python=/usr/bin/python3" in made.spec["args"]
