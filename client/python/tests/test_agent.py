"""The package against a real dnngovd (on a fixture board, started by
tests/tests/python_package.rs): registration, inferences the agent counts, a target the
agent takes, and the example app under the agent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dnngov

LIBRARY = [dnngov.Subnet(0, "small", 70.0, 2.0), dnngov.Subnet(1, "large", 75.0, 4.0)]


def wait_for(what, condition, timeout_s=10.0):
    until = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < until, "timed out waiting for " + what
        time.sleep(0.01)


def the_app(agent, name):
    apps = [a for a in agent.apps() if a["name"] == name]
    return apps[0] if apps else None


def test_registers_with_the_agent_and_its_inferences_are_counted(agent):
    with dnngov.register("py-governed", LIBRARY, deadline_ms=40.0, devices=("gpu",),
                         socket_path=agent.socket) as app:
        assert app.connected
        assert app.app_id != 0
        assert app.current_subnet in (0, 1)
        app.on_subnet_change(lambda subnet: None)
        for _ in range(20):
            with app.inference():
                time.sleep(0.001)
        wait_for("the agent to count 20 inferences",
                 lambda: (the_app(agent, "py-governed") or {}).get("inferences") == 20)
        seen = the_app(agent, "py-governed")
        assert seen["app_id"] == app.app_id
        assert seen["pid"] == os.getpid()
        assert seen["active_subnet"] == app.running

        app.set_target(25.0, accuracy_floor_pct=70.0)
        wait_for("the agent to take the new deadline",
                 lambda: the_app(agent, "py-governed")["deadline_ms"] == 25.0)
    wait_for("the app to leave the agent", lambda: the_app(agent, "py-governed") is None)


def test_a_registration_the_agent_refuses_raises(agent):
    # Two sub-networks with one id: the library refuses it before the agent sees it, and
    # nothing registers.
    try:
        dnngov.register("py-refused", [(0, "a", 70.0), (0, "b", 75.0)], deadline_ms=40.0,
                        socket_path=agent.socket)
    except dnngov.DnngovError as error:
        assert str(error)
    else:
        raise AssertionError("a library with a duplicate id registered")
    assert the_app(agent, "py-refused") is None


EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                       "elastic_mlp.py")


def test_the_example_runs_under_the_agent(agent):
    result = subprocess.run([sys.executable, EXAMPLE, "--name", "py-example",
                             "--inferences", "30", "--socket", agent.socket],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("app id ") and not first.startswith("app id 0 "), first
    assert result.stdout.splitlines()[-1].startswith("done 30 inferences")
