# The two commands of README: `make lab` (set up, bring up the one-machine lab, show it working)
# and `make test`. Both need root: namespaces, Open vSwitch, macvlan.
VENV    ?= .venv
PYTHON  ?= python3
APT_PACKAGES = openvswitch-switch containernetworking-plugins iproute2 iputils-ping iputils-arping \
               user-mode-linux tcpdump python3-venv python3-pip gcc libc6-dev etcd-server iptables \
               podman runc debootstrap containerd graphviz
# The Kubernetes control plane the tests run against, built once per machine from deploy/k8s/bin/go.mod
# into ~/.cache/underlay/k8s/<version>/ (deploy/k8s/build.py; the first build is ~10 minutes), and
# kubectl of the same release, which the manifests' tests apply deploy/kubernetes with.
K8S_COMPONENTS = kube-apiserver kube-controller-manager kube-scheduler kubectl
# The lab's real kubelet node (`underlay-lab up --kubernetes --kubelet`, deploy/lab/realnode.py).
K8S_COMPONENTS += kubelet kube-proxy

.PHONY: setup k8s image test lab lab-down install-cni clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "==> apt packages: $(APT_PACKAGES)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null
	@echo "==> python venv $(VENV) with underlay[test]"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

k8s: setup
	$(VENV)/bin/python -m deploy.k8s.build $(K8S_COMPONENTS)

# The container images (localhost/underlay:dev, localhost/pause:3.10) on a Debian base made by
# debootstrap, saved as OCI archives for containerd in ~/.cache/underlay/image/ (deploy/image/build.py).
image: setup
	$(VENV)/bin/python -m deploy.image.build

test: setup k8s
	$(VENV)/bin/mypy  # --strict on the package, configured in pyproject.toml
	$(VENV)/bin/python -m pytest tests

lab: setup
	$(VENV)/bin/underlay-lab up
	$(VENV)/bin/underlay-lab demo

lab-down: setup
	$(VENV)/bin/underlay-lab down

install-cni: setup
	$(VENV)/bin/python -m cni.install --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d

clean:
	rm -rf $(VENV) build *.egg-info
