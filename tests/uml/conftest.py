"""Load the UML runner for this directory until the root conftest loads it for the whole suite.

`import_plugin` is a no-op when the plugin is already loaded (root `pytest_plugins`, or `-p` as the
runner passes inside UML), so the hooks never run twice.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("deploy.uml.pytest_plugin")
