"""Events to a real MQTT broker (Debian mosquitto, TLS with client certificates, passwords, ACL) through the
outbox: the retained state topic, call events under airlock/v1/{site}/{appliance}/, events waiting in the spool
while the broker is down and delivered after its restart with nothing lost, the last will on a crash, and a
wrong password refused without losing the events."""

from __future__ import annotations

import hashlib
import json
import time

from harness import metrics, procs
from harness.airlock import Airlock
from harness.mqtt import Broker, Subscriber
from harness.tls import Pki
from harness.uplink import record_burst, wait_metric

SITE = "test-site"
APPLIANCE = "airlock-7"
ROOT = f"airlock/v1/{SITE}/{APPLIANCE}"


def start_airlock(airlock_factory, broker: Broker, **mqtt) -> Airlock:
    return airlock_factory(overrides={"outbox": {"site": SITE},
                                      "outbox.mqtt": broker.airlock_section(appliance=APPLIANCE, **mqtt)}).start()


def call_events(subscriber: Subscriber) -> list[dict]:
    prefix = f"{ROOT}/evt/call/ended "
    return [json.loads(line[len(prefix):]) for line in subscriber.lines() if line.startswith(prefix)]


def test_events_reach_the_broker_and_wait_in_the_spool_while_it_is_down(airlock_factory, registry, tmp_path,
                                                                        speech_a, speech_b):
    broker = Broker(tmp_path / "mqtt", registry, Pki(tmp_path / "pki"), SITE, APPLIANCE).start()
    noc = Subscriber(broker)
    inst = start_airlock(airlock_factory, broker)
    noc.wait_for(lambda line: line == f"{ROOT}/state online", what="the retained state 'online'")
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="events"}', lambda v: v == 1)

    record_burst(inst, {"1": speech_a, "2": speech_b})
    [first] = inst.wait_calls(1)
    noc.wait_for(lambda line: line.startswith(f"{ROOT}/evt/call/ended "), what="the call's event")
    assert [e["call"] for e in call_events(noc)] == [first.name]
    started = noc.wait_for(lambda line: line.startswith(f"{ROOT}/evt/call/started "), what="the call's start")
    assert json.loads(started[0].split(" ", 1)[1]) | {"at": None} == \
        {"event": "call_started", "call": first.name, "source": "siprec", "at": None}, started
    # One upload event per artifact, with the object's key and SHA-256 (the manifest last).
    noc.wait_for(lambda line: line.startswith(f"{ROOT}/evt/artifact/uploaded ") and "manifest.json" in line,
                 what="the manifest's upload event")
    uploads = [json.loads(line.split(" ", 1)[1]) for line in noc.lines()
               if line.startswith(f"{ROOT}/evt/artifact/uploaded ")]
    assert {u["key"].rsplit("/", 1)[1] for u in uploads} == {p.name for p in first.iterdir()}, uploads
    for upload in uploads:
        path = inst.uplink / upload["key"]
        assert upload["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and upload["bytes"] == \
            path.stat().st_size, upload
    assert not (inst.uplink / "events.jsonl").exists(), "with a broker configured, events go only there"

    # Broker down: the next call's event waits in the spool; the NOC gets it after the broker's restart.
    broker.stop()
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="events"}', lambda v: v == 0)
    record_burst(inst, {"1": speech_b, "2": speech_a})
    calls = inst.wait_calls(2)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v >= 1)
    assert len(call_events(noc)) == 1
    broker.start()
    noc.wait_for(lambda line: len(call_events(noc)) >= 2, timeout=60, what="the event spooled while it was down")
    assert sorted({e["call"] for e in call_events(noc)}) == sorted(c.name for c in calls), call_events(noc)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0)
    assert wait_metric(inst, 'airlock_outbox_uplink_up{sink="events"}', lambda v: v == 1) == 1

    # A crash: the broker publishes the retained last will.
    inst.kill9()
    noc.wait_for(lambda line: line == f"{ROOT}/state offline", what="the last will 'offline'")
    log = inst.log.read_text(errors="replace")
    assert "connected to the MQTT broker" in log
    for secret in broker.passwords.values():
        assert secret not in log


def test_a_wrong_password_is_named_and_events_are_kept(airlock_factory, registry, tmp_path, speech_a, speech_b):
    broker = Broker(tmp_path / "mqtt", registry, Pki(tmp_path / "pki"), SITE, APPLIANCE).start()
    noc = Subscriber(broker)
    inst = airlock_factory(overrides={"outbox": {"site": SITE},
                                      "outbox.mqtt": broker.airlock_section(appliance=APPLIANCE)})
    (broker.dir / "appliance-password").write_text("not-the-password\n")
    inst.start()
    record_burst(inst, {"1": speech_a, "2": speech_b})
    inst.wait_calls(1)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v >= 1)
    assert metrics_value(inst, 'airlock_outbox_uplink_up{sink="events"}') == 0
    wait_for_log(inst, "the broker refused the connection")
    wait_metric(inst, 'airlock_alarm{alarm="mqtt_refused"}', lambda v: v == 1)
    assert call_events(noc) == []

    # Fixed password, restart: the kept event is delivered.
    assert inst.terminate() == 0
    (broker.dir / "appliance-password").write_text(broker.passwords[APPLIANCE] + "\n")
    inst.start()
    noc.wait_for(lambda line: line.startswith(f"{ROOT}/evt/call/ended "), what="the kept event")
    # The alarm raised while the broker refused the appliance is published, and cleared after the fix.
    noc.wait_for(lambda line: line.startswith(f"{ROOT}/alarm/mqtt_refused ") and '"cleared"' in line,
                 what="the cleared alarm")
    assert any(line.startswith(f"{ROOT}/alarm/mqtt_refused ") and '"raised"' in line for line in noc.lines()), \
        noc.lines()
    assert metrics_value(inst, 'airlock_alarm{alarm="mqtt_refused"}') == 0
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0)
    assert inst.terminate() == 0


def metrics_value(inst: Airlock, name: str) -> float:
    return metrics.value(metrics.parse(inst.metrics_text()), name)


def wait_for_log(inst: Airlock, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in inst.log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"airlock's log never said {text!r}:\n{procs.tail(inst.log)}")
