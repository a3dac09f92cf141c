"""The outbox with its embedded local sink: finished calls and events wait in the durable spool while the uplink
is down (here: `uplink/` replaced by a plain file, so every delivery fails), nothing is lost, a full spool refuses
new calls with 503 + Retry-After, and everything arrives — byte-exact — once the uplink is back, also after a
kill -9 of the appliance in between."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import grpc

from harness import audio, g711, metrics, procs, voicestream
from harness.airlock import Airlock, check_manifest, stream_by_label
from harness.rtp import SAMPLES_PER_PACKET
from harness.sip import SipUac, siprec_body
from harness.uplink import bring_uplink_back, record_burst, take_uplink_down, wait_metric
from harness.voicestream import LegClient, LegConfig


def spooled_records(inst: Airlock) -> list[Path]:
    return sorted((inst.data_dir / "outbox").glob("*.rec"))


def assert_delivered_exactly(inst: Airlock, payloads: dict[str, bytes]) -> Path:
    [call_dir] = inst.wait_calls(1, timeout=30)
    # Each sink retries on its own backoff: the events may arrive a few seconds after the objects.
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0, timeout=30)
    manifest = inst.manifest(call_dir)
    check_manifest(inst, call_dir, manifest)
    relative = call_dir.relative_to(inst.uplink).parts
    assert relative[0] == "local" and len(relative) == 5, f"key layout site/yyyy/mm/dd/call: {relative}"
    assert "/".join(relative[1:4]) == manifest["started_at"][:10].replace("-", "/"), (relative, manifest["started_at"])
    streams = stream_by_label(manifest)
    wav = inst.recording(call_dir)
    for label, payload in payloads.items():
        audio.assert_exact_run(wav.channel(streams[label]["channel"]), g711.decode(payload, "PCMU"), label)
    assert not list(inst.uplink.rglob("*.partial")), "no half-written object is left"
    return call_dir


def test_uplink_down_keeps_everything_and_a_full_spool_refuses_new_calls(airlock_factory, speech_a, speech_b):
    inst = airlock_factory(overrides={"outbox": {"max_mib": 0.05, "reserve_mib": 0}}).start()
    aside = take_uplink_down(inst)
    payloads = {"1": speech_a, "2": speech_b}
    record_burst(inst, payloads)

    # Recording and manifest wait in the spool; both sinks report the uplink down; nothing was delivered.
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v >= 2)
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="objects"}', lambda v: v == 0)
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="events"}', lambda v: v == 0)
    samples = metrics.parse(inst.metrics_text())
    assert metrics.value(samples, 'airlock_outbox_deliveries_total{sink="objects",result="error"}') >= 1
    assert metrics.value(samples, "airlock_outbox_spool_bytes") > 0.05 * 1048576
    assert inst.finished_calls() == [] and len(spooled_records(inst)) >= 3, spooled_records(inst)

    # The spool is past its limit: a new call is refused with 503 and Retry-After, and admission shows closed.
    uac = SipUac(inst.sip)
    try:
        ctype, body = siprec_body(["1", "2"], [40010, 40012])
        resp, _ = uac.invite(body, ctype)
        assert resp.status == 503, resp
        assert (resp.header("Retry-After") or "").strip().split(";")[0].strip().isdigit(), resp
    finally:
        uac.close()
    assert metrics.value(metrics.parse(inst.metrics_text()), "airlock_admission_open") == 0
    wait_metric(inst, 'airlock_alarm{alarm="spool_full"}', lambda v: v == 1)

    # Uplink back: everything is delivered byte-exact, the spool empties and new calls are admitted again.
    bring_uplink_back(inst, aside)
    call_dir = assert_delivered_exactly(inst, payloads)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 0)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0)
    assert wait_metric(inst, 'airlock_outbox_uplink_up{sink="objects"}', lambda v: v == 1) == 1
    assert spooled_records(inst) == []
    events = [e for e in inst.events() if e.get("event") == "call_recorded"]
    assert [e["call"] for e in events] == [call_dir.name], events
    record_burst(inst, {"1": speech_b[:50 * SAMPLES_PER_PACKET], "2": speech_a[:50 * SAMPLES_PER_PACKET]})
    assert len(inst.wait_calls(2, timeout=30)) == 2
    # The NOC saw the spool-full alarm raised and cleared (spooled while the uplink was down, delivered after).
    wait_metric(inst, 'airlock_alarm{alarm="spool_full"}', lambda v: v == 0)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0)
    alarms = [(e["alarm"], e["state"]) for e in inst.events() if e.get("event") == "alarm"]
    assert alarms == [("spool_full", "raised"), ("spool_full", "cleared")], alarms
    assert inst.terminate() == 0


def test_spooled_calls_survive_kill9_and_are_delivered_after_restart(airlock_factory, speech_a, speech_b):
    inst = airlock_factory().start()
    aside = take_uplink_down(inst)
    payloads = {"1": speech_b, "2": speech_a}
    record_burst(inst, payloads)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v >= 2)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v >= 1)
    inst.kill9()
    assert len(spooled_records(inst)) >= 3

    bring_uplink_back(inst, aside)
    inst.start()
    call_dir = assert_delivered_exactly(inst, payloads)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0)
    assert spooled_records(inst) == []
    assert not list((inst.data_dir / "outbox" / "files").iterdir())
    assert not (inst.data_dir / "active").is_dir() or not any((inst.data_dir / "active").iterdir())
    lines = [json.loads(line) for line in (inst.uplink / "events.jsonl").read_text().splitlines()]
    assert [e["call"] for e in lines if e.get("event") == "call_recorded"] == [call_dir.name], lines
    assert inst.terminate() == 0


def test_a_full_spool_refuses_new_voicestream_calls_not_their_legs(airlock_factory, vs_stubs, speech_a, speech_b,
                                                                   speech_dir):
    """VoiceStream: with the spool past its limit a leg of a new call gets Five9's 1100 and RESOURCE_EXHAUSTED,
    while a leg joining a call that was already recording is accepted; once drained, new calls stream again."""
    port = procs.free_port(tcp_and_udp=False)
    inst = airlock_factory(overrides={
        "outbox": {"max_mib": 0.05, "reserve_mib": 0},
        "voicestream": {"listen": f"127.0.0.1:{port}", "insecure_plaintext": True, "idle_timeout_secs": 30,
                        "leg_linger_secs": 2},
        "voicestream.trust_tokens": {"sub-1": ["token-1"]},
    }).start()
    procs.wait_tcp(port, 10, inst.proc)
    target = f"127.0.0.1:{port}"
    pcm = audio.speech_pcm16("Hello, I am calling about my invoice from last month.", speech_dir, "outbox-pcm")
    aside = take_uplink_down(inst)

    # A VoiceStream call is under way (its customer leg streams slowly) when the spool fills up.
    ongoing = str(random.randrange(300000000000000, 399999999999999))
    customer = LegClient(target, LegConfig(vcc_call_id=ongoing, call_leg="customer"), pcm, end="ended")
    customer.start()
    time.sleep(0.5)
    record_burst(inst, {"1": speech_a, "2": speech_b})
    wait_metric(inst, "airlock_outbox_spool_bytes", lambda v: v > 0.05 * 1048576)

    refused = LegClient(target, LegConfig(vcc_call_id=str(random.randrange(300000000000000, 399999999999999)),
                                          call_leg="customer"), pcm, end="ended")
    refused.start()
    report = refused.join(30)
    assert report.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED, report.describe()
    assert voicestream.SRV_ERROR_NO_RESOURCE in report.codes, report.describe()
    assert "outbox" in report.grpc_details, report.describe()

    agent = LegClient(target, LegConfig(vcc_call_id=ongoing, call_leg="agent"), pcm, end="ended")
    agent.start()
    for leg in (agent.join(30), customer.join(30)):
        assert leg.error is None and leg.grpc_code == grpc.StatusCode.OK, leg.describe()
        assert leg.codes[0] == voicestream.SRV_REQ_START_STREAMING, leg.describe()

    bring_uplink_back(inst, aside)
    assert len(inst.wait_calls(2, timeout=40)) == 2, "the SIPREC call and the VoiceStream call both arrive"
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 0, timeout=30)
    later = LegClient(target, LegConfig(vcc_call_id=str(random.randrange(300000000000000, 399999999999999)),
                                        call_leg="customer"), pcm, end="ended")
    later.start()
    report = later.join(30)
    assert report.error is None and report.grpc_code == grpc.StatusCode.OK, report.describe()
    assert inst.terminate() == 0
