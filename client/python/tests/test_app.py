"""The typed API without an agent: registration as a context manager, inference
markers, following sub-network changes, targets, profiles and the per-inference trace,
and the earlier Session interface."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

import dnngov

LIBRARY = [dnngov.Subnet(0, "small", 70.0, 2.0), dnngov.Subnet(1, "medium", 72.5),
           (2, "large", 75.0, 6.0, 1.0)]


def test_registers_standalone_on_the_most_accurate_subnet(no_agent):
    with dnngov.register("py-standalone", LIBRARY, deadline_ms=20.0) as app:
        assert isinstance(app, dnngov.App)
        assert app.app_id == 0
        assert not app.connected
        assert app.current_subnet == 2
        assert app.subnet(2) == dnngov.Subnet(2, "large", 75.0, 6.0, 1.0)
        assert app.subnets[1].latency_ms is None


def test_leaving_the_with_block_closes_the_app(no_agent):
    with dnngov.register("py-closed", LIBRARY, deadline_ms=20.0) as app:
        pass
    assert app.session.closed
    with pytest.raises(dnngov.DnngovError, match="closed"):
        app.current_subnet
    app.close()  # a second close does nothing


def test_an_inference_records_its_latency_and_subnet(no_agent):
    with dnngov.register("py-latency", LIBRARY, deadline_ms=20.0) as app:
        app.ack(app.current_subnet)
        with app.inference() as inference:
            assert inference.latency_s is None
            total = sum(i * i for i in range(20000))
        assert total > 0
        assert inference.subnet == 2
        assert inference.deadline_ms == 20.0  # the target's, by default
        assert inference.latency_s is not None and inference.latency_s > 0
        assert inference.latency_ms == pytest.approx(inference.latency_s * 1e3)
        assert app.last_inference is inference
        with app.inference(deadline_ms=0.0) as unbounded:
            pass
        assert unbounded.missed is None  # no deadline, never a miss


def test_an_inference_that_raises_is_still_ended(no_agent):
    with dnngov.register("py-raises", LIBRARY, deadline_ms=20.0) as app:
        with pytest.raises(ValueError):
            with app.inference():
                raise ValueError("the model failed")
        assert app.last_inference is not None
        assert app.last_inference.latency_s is not None
        # The end marker ran: a new inference can begin.
        with app.inference() as after:
            pass
        assert after.latency_s is not None


def test_the_change_callback_switches_once_before_the_first_inference(no_agent):
    switched = []
    with dnngov.register("py-callback", LIBRARY, deadline_ms=20.0) as app:
        app.on_subnet_change(switched.append)
        assert app.running is None
        for _ in range(5):
            with app.inference() as inference:
                pass
        assert switched == [2]
        assert app.running == 2
        assert inference.subnet == 2


class ScriptedSession:
    """A session whose requested sub-network follows a script, as an agent's would."""

    def __init__(self, requested):
        self.requested = list(requested)
        self.acked = []
        self.closed = False

    def current_subnet(self):
        if len(self.requested) > 1:
            return self.requested.pop(0)
        return self.requested[0]

    def ack_subnet(self, subnet):
        self.acked.append(subnet)

    def begin(self, deadline_ms):
        return 1

    def end(self):
        return 0.001


def test_subnet_changes_yields_each_change_once():
    session = ScriptedSession([2, 2, 0, 0, 0, 1, 1])
    app = dnngov.App(session, "py-scripted", LIBRARY, 20.0)
    seen = list(app.subnet_changes(poll_interval_s=0.0, timeout_s=0.05))
    assert seen == [2, 0, 1]


def test_subnet_changes_ends_when_the_app_closes(no_agent):
    app = dnngov.register("py-generator", LIBRARY, deadline_ms=20.0)
    changes = app.subnet_changes(poll_interval_s=0.001)
    assert next(changes) == 2
    app.close()
    assert list(changes) == []


def test_follow_switches_and_acknowledges_what_the_agent_asks_for():
    session = ScriptedSession([2, 0, 0, 1])
    switched = []
    app = dnngov.App(session, "py-follow", LIBRARY, 20.0)
    app.on_subnet_change(switched.append)
    for _ in range(4):
        with app.inference():
            pass
    assert switched == [2, 0, 1]
    assert session.acked == [2, 0, 1]


def test_an_invalid_library_or_device_is_refused(no_agent):
    with pytest.raises(dnngov.DnngovError):
        dnngov.register("py-empty", [], deadline_ms=20.0)
    with pytest.raises(dnngov.DnngovError, match="unknown device"):
        dnngov.register("py-tpu", LIBRARY, deadline_ms=20.0, devices=("tpu",))
    with pytest.raises(dnngov.DnngovError):
        dnngov.register("py-deadline", LIBRARY, deadline_ms=0.0)


def test_set_target_changes_the_default_deadline_and_refuses_a_bad_one(no_agent):
    with dnngov.register("py-target", LIBRARY, deadline_ms=20.0) as app:
        app.set_target(10.0, accuracy_floor_pct=72.0)
        with app.inference() as inference:
            pass
        assert inference.deadline_ms == 10.0
        with pytest.raises(dnngov.DnngovError):
            app.set_target(0.0)
        assert app.deadline_ms == 10.0


def test_the_trace_has_a_line_per_inference(no_agent, tmp_path, monkeypatch):
    monkeypatch.setenv("DNNGOV_TRACE_DIR", str(tmp_path))
    with dnngov.register("py-trace", LIBRARY, deadline_ms=20.0) as app:
        app.on_subnet_change(lambda subnet: None)
        for _ in range(3):
            with app.inference():
                pass
    trace = tmp_path / ("py-trace-%d.csv" % os.getpid())
    with open(str(trace)) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert {row["subnet"] for row in rows} == {"2"}
    assert {row["deadline_ns"] for row in rows} == {"20000000"}


def test_a_profiles_library_registers(no_agent, tmp_path):
    profile = {
        "format_version": 1, "app": "py-profiled", "machine": "test",
        "created_unix_s": 0, "measurements": [],
        "library": [{"id": 4, "name": "w0.5", "accuracy_pct": 71.0, "latency_ms": 9.0},
                    {"id": 7, "name": "w1.0", "accuracy_pct": 77.0}],
    }
    path = tmp_path / "p.profile.json"
    path.write_text(json.dumps(profile))
    assert dnngov.load_profile(str(path)) == [dnngov.Subnet(4, "w0.5", 71.0, 9.0, None),
                                              dnngov.Subnet(7, "w1.0", 77.0, None, None)]
    with dnngov.register_profile(str(path), deadline_ms=30.0) as app:
        assert app.name == "py-profiled"
        assert app.current_subnet == 7
    profile["format_version"] = 2
    path.write_text(json.dumps(profile))
    with pytest.raises(dnngov.DnngovError, match="format_version"):
        dnngov.register_profile(str(path), deadline_ms=30.0)


def test_the_earlier_session_interface_still_works(no_agent):
    with dnngov.Session("py-session", [(0, "small", 70.0), (1, "large", 75.0, 5.0)],
                        deadline_ms=20.0, devices=("gpu",)) as session:
        subnet = session.current_subnet()
        assert subnet == 1
        session.ack_subnet(subnet)
        with session.inference(deadline_ms=20.0):
            pass
        session.begin(20.0)
        assert session.end() > 0
        assert session.app_id == 0 and not session.connected


EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                       "elastic_mlp.py")


def test_the_example_runs_standalone(no_agent):
    result = subprocess.run([sys.executable, EXAMPLE, "--inferences", "12"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "app id 0 (0: no agent, running standalone)"
    assert "running hidden256" in lines
    assert lines[-1].startswith("done 12 inferences")
