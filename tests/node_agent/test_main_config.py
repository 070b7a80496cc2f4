"""`underlay-agent`'s configuration (node_agent/main.py): the keys a cluster's DaemonSet sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.main import load_config


def test_the_agent_takes_the_address_from_its_config(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('node = "n1"\ncontroller_url = "https://underlay-controller.underlay-system'
                                         '.svc:6680"\ncontroller_address = "198.18.0.2"\n')
    assert load_config(["--config", str(tmp_path / "agent.toml")]).controller_address == "198.18.0.2"
    assert load_config(["--config", str(tmp_path / "agent.toml"), "--controller-address", ""]).controller_address is None


def test_the_node_name_comes_from_the_downward_api_in_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DaemonSet sets NODE_NAME from spec.nodeName: the node its pod's token is bound to."""
    monkeypatch.setenv("NODE_NAME", "worker-7")
    assert load_config([]).node == "worker-7"
    assert load_config(["--node", "n1"]).node == "n1"
