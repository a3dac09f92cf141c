"""Retention per call and on the device: a SIPREC call from SIPp whose metadata matches a `policy.retention_rules`
entry gets that rule's class (in the manifest's policy stamp and as Object Lock retain-until on every object, in
moto), a call that matches nothing gets the default; a VoiceStream call's campaign and skill choose its class the
same way (seen in the spooled records' retention through the on-device copies); and a class with `keep_on_device` keeps the delivered
artifacts under `<data>/retained/` (the encrypted bytes that left), counted on a gauge, purged (audited with the
class) once due — across a restart — and not while the class is under legal hold."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

from harness import audio, g711, metrics, procs
from harness.rtp import RtpSender
from harness.s3 import MotoServer
from harness.sipp import SCENARIO, SippSiprecSrc
from harness.uplink import record_burst, wait_metric
from harness.voicestream import LegClient, LegConfig
from test_s3 import BUCKET, SITE, s3_section

QUEUE = "billing-en"


def sipp_call(inst, registry, workdir: Path, speech: bytes, extension: str | None = None) -> None:
    """One SIPp SIPREC call (two streams of `speech`); with `extension`, that element is added to the metadata
    as a group's extension data."""
    scenario = SCENARIO
    if extension is not None:
        text = SCENARIO.read_text()
        anchor = "<datamode>complete</datamode>"
        assert anchor in text
        group = f'<group group_id="cmV0ZW50aW9uLWdyb3Vw">{extension}</group>'
        workdir.mkdir(parents=True, exist_ok=True)
        scenario = workdir / "scenario.xml"
        scenario.write_text(text.replace(anchor, anchor + "\n        " + group, 1))
    audio_ms = len(speech) // 8
    sipp = SippSiprecSrc(registry, inst.sip_port, workdir / "sipp", call_ms=audio_ms + 1000, scenario=scenario)
    ports = sipp.ports()
    senders = [RtpSender(("127.0.0.1", port), speech, g711.PT_PCMU) for port in ports.values()]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(audio_ms / 1000 + 5)
        sender.close()
    sipp.wait()


def bucket_manifests(server, timeout: float, count: int) -> dict[str, dict]:
    """{call prefix: manifest} once `count` manifests are in the bucket."""
    deadline = time.monotonic() + timeout
    while True:
        objects = server.objects(BUCKET)
        manifests = {key.rsplit("/", 1)[0]: json.loads(body) for key, body in objects.items()
                     if key.endswith("/manifest.json")}
        if len(manifests) >= count or time.monotonic() > deadline:
            assert len(manifests) == count, sorted(objects)
            return manifests
        time.sleep(0.3)


def test_siprec_metadata_chooses_the_class_in_the_stamp_and_the_object_lock(airlock_factory, registry, tmp_path,
                                                                            speech_a):
    server = MotoServer(tmp_path / "moto", registry).start()
    server.create_bucket(BUCKET, object_lock=True)
    inst = airlock_factory(overrides={
        "outbox": {"site": SITE}, "outbox.s3": s3_section(tmp_path, server),
        "outbox.s3.object_lock": {"mode": "governance", "retention_days": 1},
        "policy": {"default_retention_class": "standard", "retention_rules": [
            {"participant_domain": "vip.example.net", "class": "vip"},
            {"siprec_extension": {"name": "queue", "value": QUEUE}, "participant_domain": "cc.example.com",
             "class": "billing"},
        ]},
        "policy.retention_classes": {"standard": 30, "vip": 7, "billing": 400},
    }).start()
    started = datetime.datetime.now(datetime.timezone.utc)
    # The queue in a foreign namespace, as the SBC puts it in a group's extension data; the agent's AoR is in
    # cc.example.com (the scenario's metadata): rule 1 matches (rule 0 does not).
    sipp_call(inst, registry, tmp_path / "matching", speech_a,
              extension=f'<cc:queue xmlns:cc="urn:example:contact-centre:1">{QUEUE}</cc:queue>')
    [matching] = bucket_manifests(server, 30, 1)
    sipp_call(inst, registry, tmp_path / "plain", speech_a)
    manifests = bucket_manifests(server, 30, 2)
    [plain] = [prefix for prefix in manifests if prefix != matching]

    expected = {matching: ("billing", 400, 1), plain: ("standard", 30, None)}
    for prefix, (cls, days, rule) in expected.items():
        stamp = manifests[prefix]["policy"]
        assert (stamp["retention_class"], stamp["retention_days"], stamp["retention_rule"]) == (cls, days, rule), \
            stamp
        assert "retention_rule" not in manifests[prefix], "the call's choice is replaced by the stamp"
        keys = [key for key in server.objects(BUCKET) if key.startswith(prefix + "/")]
        assert {Path(key).name for key in keys} == {"manifest.json", "recording.wav.age"}, keys
        for key in keys:
            mode, until, hold = server.object_lock(BUCKET, key)
            assert mode == "GOVERNANCE" and hold != "ON", (key, mode, hold)
            want = started + datetime.timedelta(days=days)
            assert abs((until - want).total_seconds()) < 300, (key, until, want)
    # The value matched is call metadata: it never reaches the log.
    assert QUEUE not in inst.log.read_text(errors="replace")
    assert inst.terminate() == 0


def audit_entries(inst) -> list[dict]:
    return [json.loads(line) for line in (inst.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]


def retained_files(inst) -> list[Path]:
    root = inst.data_dir / "retained"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "index.jsonl")


def test_a_class_keeps_delivered_artifacts_on_the_device_until_due_unless_held(airlock_factory, speech_a, speech_b):
    inst = airlock_factory(overrides={
        "policy": {"default_retention_class": "kept"},
        "policy.retention_classes": {"kept": {"days": 30, "keep_on_device": "4s"}},
    })
    inst.start()
    record_burst(inst, {"1": speech_a, "2": speech_b})
    [call] = inst.wait_calls(1, timeout=30)
    prefix = str(call.relative_to(inst.uplink))
    wait_metric(inst, "airlock_retained_objects", lambda v: v == 2)
    kept = {str(p.relative_to(inst.data_dir / "retained")): p for p in retained_files(inst)}
    assert sorted(kept) == [f"{prefix}/manifest.json", f"{prefix}/recording.wav.age"], sorted(kept)
    # The copies are the bytes delivered: the recording stays age-encrypted.
    for key, path in kept.items():
        assert path.read_bytes() == (inst.uplink / key).read_bytes(), key
    assert kept[f"{prefix}/recording.wav.age"].read_bytes().startswith(b"age-encryption.org/v1\n")
    total = sum(p.stat().st_size for p in kept.values())
    assert metrics.value(metrics.parse(inst.metrics_text()), "airlock_retained_bytes") == total
    retained = [e for e in audit_entries(inst) if e["kind"] == "artifact_retained"]
    assert sorted(e["subject"] for e in retained) == sorted(kept), retained
    assert all(e["detail"]["retention_class"] == "kept" and e["detail"]["until"] for e in retained), retained
    # The journal a compliance officer reads: what is kept, for which class, until when.
    journal = [json.loads(line) for line in (inst.data_dir / "retained" / "index.jsonl").read_text().splitlines()]
    assert sorted(line["key"] for line in journal if line["op"] == "kept") == sorted(kept)

    # A restart before they are due: the deadline survives it and the sweeper purges them then, audited.
    assert inst.terminate() == 0
    inst.start()
    wait_metric(inst, "airlock_retained_objects", lambda v: v == 0, timeout=20)
    assert retained_files(inst) == []
    purged = [e for e in audit_entries(inst) if e["kind"] == "artifact_purged"
              and e["detail"].get("retention_class") == "kept"]
    assert sorted(e["subject"] for e in purged) == sorted(kept), purged
    assert metrics.value(metrics.parse(inst.metrics_text()), "airlock_retained_bytes") == 0
    assert inst.terminate() == 0

    # Under legal hold (the class's), nothing due is purged; lifting the hold lets the sweeper purge.
    inst.config["policy.retention_classes"]["kept"]["legal_hold"] = True
    inst.start()
    record_burst(inst, {"1": speech_b, "2": speech_a})
    [second] = [c for c in inst.wait_calls(2, timeout=30) if c != call]
    wait_metric(inst, "airlock_retained_objects", lambda v: v == 2)
    time.sleep(6)
    assert len(retained_files(inst)) == 2, "held copies stay past their time"
    assert inst.terminate() == 0
    inst.config["policy.retention_classes"]["kept"]["legal_hold"] = False
    inst.start()
    wait_metric(inst, "airlock_retained_objects", lambda v: v == 0, timeout=20)
    second_prefix = str(second.relative_to(inst.uplink))
    purged = [e["subject"] for e in audit_entries(inst) if e["kind"] == "artifact_purged"
              and e["subject"].startswith(second_prefix)]
    assert len(purged) == 2, purged
    assert inst.terminate() == 0


def test_a_voicestream_campaign_and_skill_choose_the_class(airlock_factory, vs_stubs, speech_dir):
    pcm = audio.speech_pcm16("Thank you for calling, let me look that up for you.", speech_dir, "pcm-retention")
    port = procs.free_port(tcp_and_udp=False)
    inst = airlock_factory(overrides={
        "voicestream": {"listen": f"127.0.0.1:{port}", "insecure_plaintext": True, "idle_timeout_secs": 30,
                        "leg_linger_secs": 1},
        "voicestream.trust_tokens": {"sub-1": ["token-1"]},
        "policy": {"retention_rules": [
            {"campaign": "Collections", "skill": "billing-en", "class": "collections"},
            {"campaign": "Collections", "class": "other-collections"},
        ]},
        "policy.retention_classes": {"standard": 30, "other-collections": 60,
                                     "collections": {"days": 365, "keep_on_device": "1h"}},
    }).start()
    procs.wait_tcp(port, 10, inst.proc)
    for number, skill in enumerate(["billing-en", "support-en"]):
        config = LegConfig(vcc_call_id=f"30000000000000{number}", call_leg="customer", campaign_id="Collections",
                           skill_id=skill)
        client = LegClient(f"127.0.0.1:{port}", config, pcm, end="ended")
        client.start()
        report = client.join(30)
        assert report.error is None, report.describe()
    calls = inst.wait_calls(2, timeout=20)
    stamps = sorted((inst.manifest(c)["policy"]["retention_class"], inst.manifest(c)["policy"]["retention_rule"])
                    for c in calls)
    assert stamps == [("collections", 0), ("other-collections", 1)], stamps
    # The first call's spooled records carried its class (and its time on the device) to the sink.
    wait_metric(inst, "airlock_retained_objects", lambda v: v == 2)
    retained = [e for e in audit_entries(inst) if e["kind"] == "artifact_retained"]
    assert {e["detail"]["retention_class"] for e in retained} == {"collections"}, retained
    log = inst.log.read_text(errors="replace")
    assert "Collections" not in log and "billing-en" not in log
    assert inst.terminate() == 0
