"""Fleet telemetry over a real MQTT broker (mosquitto, TLS, ACL): the appliance publishes a retained `health`
summary and `metrics` exposition every `outbox.mqtt.health_interval_secs`; a NOC that connects at any time gets
the latest at once; it tells a healthy appliance, a degraded one (and why: here the uplink for artifacts down and
the spool growing) and an offline one (the retained last will) apart from MQTT alone; nothing in them names a
call."""

from __future__ import annotations

import json
import subprocess
import time

from harness.airlock import Airlock
from harness.mqtt import Broker, Subscriber
from harness.tls import Pki
from harness.uplink import bring_uplink_back, record_burst, take_uplink_down, wait_metric

SITE = "ber"
APPLIANCE = "airlock-5"
ROOT = f"airlock/v1/{SITE}/{APPLIANCE}"


def latest_retained(broker: Broker, topic: str) -> str:
    """What a NOC connecting now receives first on `topic`: the retained message."""
    cred = broker.noc
    out = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
         "-i", f"noc-late-{time.monotonic_ns()}", "--cafile", str(broker.pki.ca.cert), "--cert", str(cred.cert),
         "--key", str(cred.key), "-u", "noc", "-P", broker.passwords["noc"], "-t", topic, "-C", "1", "-W", "10"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout


def healths(noc: Subscriber) -> list[dict]:
    prefix = f"{ROOT}/health "
    return [json.loads(line[len(prefix):]) for line in noc.lines() if line.startswith(prefix)]


def wait_health(noc: Subscriber, predicate, what: str, timeout: float = 30.0) -> dict:
    noc.wait_for(lambda line: line.startswith(f"{ROOT}/health ") and predicate(json.loads(line.split(" ", 1)[1])),
                 timeout=timeout, what=what)
    return [h for h in healths(noc) if predicate(h)][-1]


def test_the_noc_tells_healthy_degraded_and_offline_from_mqtt_alone(airlock_factory, registry, tmp_path,
                                                                     speech_a, speech_b):
    broker = Broker(tmp_path / "mqtt", registry, Pki(tmp_path / "pki"), SITE, APPLIANCE).start()
    noc = Subscriber(broker)
    inst: Airlock = airlock_factory(overrides={
        "outbox": {"site": SITE},
        "outbox.mqtt": broker.airlock_section(appliance=APPLIANCE, health_interval_secs=1),
    }).start()

    healthy = wait_health(noc, lambda h: h["state"] == "healthy", "a healthy summary")
    assert healthy["reasons"] == [] and healthy["alarms"] == [] and healthy["interval_secs"] == 1, healthy
    assert healthy["admission_open"] is True and healthy["active_calls"] == 0, healthy
    assert set(healthy) >= {"at", "version", "uptime_secs", "spool", "transcription", "uplink_objects_up"}
    # The metrics exposition rides along, retained; a NOC connecting later gets both at once.
    noc.wait_for(lambda line: line.startswith(f"{ROOT}/metrics "), what="the metrics snapshot")
    late = latest_retained(broker, f"{ROOT}/metrics")
    assert "airlock_active_calls" in late and "airlock_outbox_spool_bytes" in late, late[:500]
    assert json.loads(latest_retained(broker, f"{ROOT}/health"))["state"] == "healthy"

    # Artifacts cannot leave (the local uplink is a plain file now): a call's artifacts wait in the spool.
    aside = take_uplink_down(inst)
    record_burst(inst, {"1": speech_a, "2": speech_b})
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v >= 1)
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="objects"}', lambda v: v == 0)
    degraded = wait_health(noc, lambda h: h["state"] == "degraded", "a degraded summary")
    assert "uplink_objects_down" in degraded["reasons"], degraded
    assert degraded["uplink_objects_up"] is False and degraded["spool"]["objects_waiting"] >= 1, degraded
    assert json.loads(latest_retained(broker, f"{ROOT}/health"))["state"] == "degraded"

    # Back up: healthy again once the spool has drained.
    bring_uplink_back(inst, aside)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 0, timeout=60)
    [call] = inst.wait_calls(1)
    wait_health(noc, lambda h: h["state"] == "healthy" and h["spool"]["objects_waiting"] == 0,
                "healthy again after the spool drained", timeout=60)

    # Nothing in health or metrics names the call.
    published = "\n".join(line for line in noc.lines() if line.startswith((f"{ROOT}/health ", f"{ROOT}/metrics ")))
    assert call.name not in published

    # A crash: offline by the retained last will, and the last health stops being refreshed.
    inst.kill9()
    noc.wait_for(lambda line: line == f"{ROOT}/state offline", what="the last will 'offline'")
    assert latest_retained(broker, f"{ROOT}/state").strip() == "offline"
    last = json.loads(latest_retained(broker, f"{ROOT}/health"))
    time.sleep(3.5)
    assert json.loads(latest_retained(broker, f"{ROOT}/health"))["at"] == last["at"], "health kept changing"


def test_a_broker_with_a_small_packet_limit_gets_health_but_not_the_metrics_and_keeps_the_events(
        airlock_factory, registry, tmp_path, speech_a, speech_b):
    broker = Broker(tmp_path / "mqtt", registry, Pki(tmp_path / "pki"), SITE, APPLIANCE)
    # Announced in CONNACK: the metrics exposition (tens of KB) does not fit, the health summary and events do.
    broker.config.write_text(broker.config.read_text() + "max_packet_size 4096\n")
    broker.start()
    noc = Subscriber(broker)
    inst: Airlock = airlock_factory(overrides={
        "outbox": {"site": SITE},
        "outbox.mqtt": broker.airlock_section(appliance=APPLIANCE, health_interval_secs=1),
    }).start()
    wait_health(noc, lambda h: h["state"] == "healthy", "a healthy summary")
    record_burst(inst, {"1": speech_a, "2": speech_b})
    noc.wait_for(lambda line: line.startswith(f"{ROOT}/evt/call/ended "), what="the call's event")
    time.sleep(2.5)  # two more health rounds
    log = inst.log.read_text(errors="replace")
    assert "larger than the broker's maximum packet size" in log, log[-3000:]
    assert "MQTT connection lost" not in log, log[-3000:]
    assert log.count("connected to the MQTT broker") == 1, log[-3000:]
    assert not any(line.startswith(f"{ROOT}/metrics ") for line in noc.lines())
