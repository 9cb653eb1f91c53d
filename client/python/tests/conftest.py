"""Fixtures of the dnngov package's tests.

The tests run against the installed package (pip install ./client/python) or the source
tree (PYTHONPATH=client/python), with libdnngov_client.so found as a user's would be
($DNNGOV_LIB, an install, or a development tree). Tests against a real dnngovd need its
sockets and dnngovctl, which tests/tests/python_package.rs provides through
DNNGOV_TEST_SOCKET, DNNGOV_TEST_ADMIN_SOCKET and DNNGOV_TEST_CTL; without them they are
skipped, saying so."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, NamedTuple

import pytest


class Agent(NamedTuple):
    socket: str
    admin_socket: str
    ctl: str

    def apps(self) -> List[Dict[str, Any]]:
        """`dnngovctl --json apps`: the registered apps as the agent sees them."""
        out = subprocess.run([self.ctl, "--admin-socket", self.admin_socket, "--json", "apps"],
                             check=True, capture_output=True, text=True).stdout
        value = json.loads(out)
        return value["apps"] if isinstance(value, dict) else value


@pytest.fixture
def agent() -> Agent:
    names = ("DNNGOV_TEST_SOCKET", "DNNGOV_TEST_ADMIN_SOCKET", "DNNGOV_TEST_CTL")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.skip("no dnngovd to test against (%s unset; cargo test -p dnngov-tests "
                    "--test python_package starts one)" % ", ".join(missing))
    return Agent(*(os.environ[name] for name in names))


@pytest.fixture
def no_agent(tmp_path, monkeypatch) -> str:
    """A socket path nothing listens on, also as $DNNGOV_SOCKET: the app runs standalone."""
    path = str(tmp_path / "no-agent.sock")
    monkeypatch.setenv("DNNGOV_SOCKET", path)
    return path
