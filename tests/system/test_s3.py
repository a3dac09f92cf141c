"""The outbox's S3 sink against real S3 servers on loopback: s3s-fs (SigV4 checked, a real store on disk) for the
data path — create-only objects with SHA-256 checksums, multipart uploads resumed after a kill -9, an S3 outage
that loses nothing, wrong credentials that raise an alarm and keep the data — and moto for Object Lock, which
s3s-fs does not implement."""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from pathlib import Path

from harness import metrics, procs
from harness.airlock import Airlock, check_manifest
from harness.calls import SiprecCall
from harness.rtp import SAMPLES_PER_PACKET
from harness.s3 import MotoServer, S3Server, ThrottledProxy
from harness.uplink import record_burst, wait_metric

SITE = "ber"
BUCKET = "calls"
MIB = 1048576


def s3_section(tmp_path: Path, server, endpoint: str | None = None, secret: str | None = None, **extra) -> dict:
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text((secret or server.secret_key) + "\n")
    section = {"endpoint": endpoint or server.endpoint, "bucket": BUCKET, "access_key_id": server.access_key,
               "secret_access_key_file": str(secret_file), "multipart_threshold_mib": 5, "part_size_mib": 5}
    section.update(extra)
    return section


def start_airlock(airlock_factory, tmp_path: Path, server, object_lock: dict | None = None, **section) -> Airlock:
    overrides = {"outbox": {"site": SITE}, "outbox.s3": s3_section(tmp_path, server, **section)}
    if object_lock:
        overrides["outbox.s3.object_lock"] = object_lock
    inst = airlock_factory(overrides=overrides)
    if isinstance(server, S3Server):
        inst.objects_root = server.data / BUCKET
    return inst.start()


def record_long_call(inst: Airlock, seconds: int, payload: bytes) -> None:
    """One SIPREC call of `seconds` of audio per stream (the payload repeated), sent faster than real time in
    slices the receive buffers can hold: a recording of ~32 kB per second, large enough for a multipart upload."""
    packets = seconds * 50
    call = SiprecCall(inst.sip, ["1", "2"]).start()
    try:
        step = 250
        for first in range(0, packets, step):
            chunk = {}
            for label in ("1", "2"):
                data = bytearray()
                for k in range(first, min(first + step, packets)):
                    at = (k * SAMPLES_PER_PACKET) % (len(payload) - SAMPLES_PER_PACKET)
                    data += payload[at:at + SAMPLES_PER_PACKET]
                chunk[label] = bytes(data)
            send_slice(call, chunk, first)
            time.sleep(0.03)
        assert call.bye().status == 200
    finally:
        call.close()


def send_slice(call: SiprecCall, payloads: dict[str, bytes], first_packet: int) -> None:
    from harness import g711
    from harness.rtp import rtp_header

    for label, payload in payloads.items():
        for k in range(len(payload) // SAMPLES_PER_PACKET):
            n = first_packet + k
            packet = rtp_header(g711.PT_PCMU, 100 + n, 8000 + n * SAMPLES_PER_PACKET, 0x0B0C + int(label),
                                marker=n == 0) + payload[k * SAMPLES_PER_PACKET:(k + 1) * SAMPLES_PER_PACKET]
            call.socks[label].sendto(packet, call.dest(label))


def delivered_call(inst: Airlock, server: S3Server, timeout: float = 60) -> Path:
    """The one call delivered to the bucket, checked: manifest fields, recording size and SHA-256, decryptable."""
    [call_dir] = inst.wait_calls(1, timeout=timeout)
    manifest = inst.manifest(call_dir)
    check_manifest(inst, call_dir, manifest)
    inst.recording(call_dir)  # age decrypts it and it parses as WAV
    relative = call_dir.relative_to(server.data / BUCKET).parts
    assert relative[0] == SITE and len(relative) == 5, f"key layout site/yyyy/mm/dd/call: {relative}"
    assert "/".join(relative[1:4]) == manifest["started_at"][:10].replace("-", "/")
    return call_dir


def assert_objects_carry_their_sha256(server: S3Server, call_dir: Path) -> None:
    """Every object of the call has user metadata sha256 = the SHA-256 of what the bucket holds."""
    prefix = str(call_dir.relative_to(server.data / BUCKET))
    objects = server.objects(BUCKET, prefix + "/")
    assert {Path(k).name for k in objects} >= {"manifest.json", "recording.wav.age"}, sorted(objects)
    for key, body in objects.items():
        head = server.head(BUCKET, key)
        assert head["Metadata"].get("sha256") == hashlib.sha256(body).hexdigest(), (key, head["Metadata"])


def uploads_in_progress(inst: Airlock) -> list[Path]:
    return sorted((inst.data_dir / "s3-uploads").glob("*.json"))


def test_calls_reach_the_bucket_create_only_with_sha256_checksums(airlock_factory, registry, tmp_path, speech_a,
                                                                  speech_b):
    server = S3Server(tmp_path / "s3", registry).start()
    server.create_bucket(BUCKET)
    inst = start_airlock(airlock_factory, tmp_path, server)
    record_burst(inst, {"1": speech_a, "2": speech_b})
    call_dir = delivered_call(inst, server)
    assert_objects_carry_their_sha256(server, call_dir)
    # A single PUT: the server verified and kept the SHA-256 the appliance sent.
    key = f"{call_dir.relative_to(server.data / BUCKET)}/recording.wav.age"
    head = server.client().head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    body = (call_dir / "recording.wav.age").read_bytes()
    assert head.get("ChecksumSHA256") == __import__("base64").b64encode(hashlib.sha256(body).digest()).decode()

    # The upload events name each object with the SHA-256 of what the bucket holds.
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0)
    uploaded = {e["key"]: e for e in inst.events() if e.get("event") == "artifact_uploaded"}
    for name in ("recording.wav.age", "manifest.json"):
        event = uploaded[f"{call_dir.relative_to(server.data / BUCKET)}/{name}"]
        assert event["sha256"] == hashlib.sha256((call_dir / name).read_bytes()).hexdigest()
    assert metrics.value(metrics.parse(inst.metrics_text()), 'airlock_outbox_uplink_up{sink="objects"}') == 1
    assert not list((inst.data_dir / "outbox").glob("*.rec"))

    # A large call goes as a multipart upload and arrives whole; no upload is left open.
    record_long_call(inst, 200, speech_a)
    calls = inst.wait_calls(2, timeout=60)
    big = max(calls, key=lambda d: (d / "recording.wav.age").stat().st_size)
    assert (big / "recording.wav.age").stat().st_size > 5 * MIB
    check_manifest(inst, big, inst.manifest(big))
    assert_objects_carry_their_sha256(server, big)
    assert server.pending_multipart_uploads() == {} and server.orphan_parts() == {}
    assert uploads_in_progress(inst) == []
    assert inst.terminate() == 0


def test_an_s3_outage_loses_nothing(airlock_factory, registry, tmp_path, speech_a, speech_b):
    server = S3Server(tmp_path / "s3", registry).start()
    server.create_bucket(BUCKET)
    inst = start_airlock(airlock_factory, tmp_path, server)
    server.kill()
    for k in range(3):
        record_burst(inst, {"1": speech_a[k * 8000:], "2": speech_b[k * 8000:]})
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="objects"}', lambda v: v == 0)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 6)
    time.sleep(5)  # a sustained outage: several failed attempts, the backoff growing
    samples = metrics.parse(inst.metrics_text())
    assert metrics.value(samples, 'airlock_outbox_deliveries_total{sink="objects",result="error"}') >= 3
    assert inst.finished_calls() == []

    server.start()
    calls = inst.wait_calls(3, timeout=90)
    for call_dir in calls:
        check_manifest(inst, call_dir, inst.manifest(call_dir))
        inst.recording(call_dir)
        assert_objects_carry_their_sha256(server, call_dir)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 0)
    assert wait_metric(inst, 'airlock_outbox_uplink_up{sink="objects"}', lambda v: v == 1) == 1
    assert "S3 unavailable" in inst.log.read_text(errors="replace")
    assert inst.terminate() == 0


def test_kill9_during_a_multipart_upload_resumes_it_without_a_corrupt_or_duplicate_object(
        airlock_factory, registry, tmp_path, speech_a):
    server = S3Server(tmp_path / "s3", registry).start()
    server.create_bucket(BUCKET)
    proxy = ThrottledProxy(server.port, rate=4 * MIB)
    try:
        inst = start_airlock(airlock_factory, tmp_path, server, endpoint=proxy.endpoint)
        record_long_call(inst, 400, speech_a)  # ~12.8 MB: three 5-MiB parts at 4 MiB/s
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline:
            states = uploads_in_progress(inst)
            if states:
                state = json.loads(states[0].read_text())
                if len(state["parts"]) >= 1:
                    break
            time.sleep(0.02)
        assert state and len(state["parts"]) >= 1, f"no part finished: {state}\n{procs.tail(inst.log)}"
        inst.kill9()
    finally:
        proxy.close()
    # Nothing half-done is visible: the recording is not in the bucket, its upload is open.
    assert not list((server.data / BUCKET).rglob("recording.wav.age"))
    assert list(server.pending_multipart_uploads()) == [state["upload_id"]]

    inst.config["outbox.s3"]["endpoint"] = server.endpoint
    inst.start()
    call_dir = delivered_call(inst, server)
    assert_objects_carry_their_sha256(server, call_dir)
    assert "resuming a multipart upload" in inst.log.read_text(errors="replace"), procs.tail(inst.log)
    # The same upload was completed: nothing open, no stray parts, one object per key.
    assert server.pending_multipart_uploads() == {} and server.orphan_parts() == {}
    assert uploads_in_progress(inst) == []
    assert len(list((server.data / BUCKET).rglob("recording.wav.age"))) == 1
    assert inst.terminate() == 0


def test_wrong_credentials_raise_an_alarm_and_keep_the_data(airlock_factory, registry, tmp_path, speech_a,
                                                            speech_b):
    server = S3Server(tmp_path / "s3", registry).start()
    server.create_bucket(BUCKET)
    inst = start_airlock(airlock_factory, tmp_path, server, secret="not-the-secret-key-0000")
    record_burst(inst, {"1": speech_a, "2": speech_b})
    wait_metric(inst, 'airlock_alarm{alarm="s3_credentials"}', lambda v: v == 1)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 2)
    log = inst.log.read_text(errors="replace")
    assert "S3 refused the credentials" in log and "secret is wrong" in log, procs.tail(inst.log)
    raised = [e for e in inst.events() if e.get("event") == "alarm"]
    assert [(e["alarm"], e["state"]) for e in raised] == [("s3_credentials", "raised")], raised
    assert inst.finished_calls() == []
    assert inst.terminate() == 0

    # The secret fixed: the kept call is delivered and the alarm cleared (it was still raised at the restart).
    (tmp_path / "s3-secret").write_text(server.secret_key + "\n")
    inst.start()
    delivered_call(inst, server)
    wait_metric(inst, 'airlock_alarm{alarm="s3_credentials"}', lambda v: v == 0)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="events"}', lambda v: v == 0)
    alarms = [(e["alarm"], e["state"]) for e in inst.events() if e.get("event") == "alarm"]
    assert alarms == [("s3_credentials", "raised"), ("s3_credentials", "cleared")], alarms
    assert inst.terminate() == 0


def test_object_lock_is_stamped_and_an_unlocked_bucket_gets_nothing(airlock_factory, registry, tmp_path, speech_a,
                                                                    speech_b):
    server = MotoServer(tmp_path / "moto", registry).start()
    server.create_bucket(BUCKET, object_lock=True)
    # The bucket's fallback is 30 days; the policy's retention class (45 days) decides for a call's objects.
    lock = {"mode": "compliance", "retention_days": 30, "legal_hold": True}
    inst = airlock_factory(overrides={
        "outbox": {"site": SITE}, "outbox.s3": s3_section(tmp_path, server), "outbox.s3.object_lock": lock,
        "policy": {"default_retention_class": "calls45"}, "policy.retention_classes": {"calls45": 45}}).start()
    started = datetime.datetime.now(datetime.timezone.utc)
    record_burst(inst, {"1": speech_a, "2": speech_b})
    deadline = time.monotonic() + 30
    objects: dict[str, bytes] = {}
    while time.monotonic() < deadline and not any(k.endswith("/manifest.json") for k in objects):
        objects = server.objects(BUCKET)
        time.sleep(0.3)
    assert {Path(k).name for k in objects} == {"manifest.json", "recording.wav.age"}, sorted(objects)
    for key, body in objects.items():
        mode, until, hold = server.object_lock(BUCKET, key)
        assert mode == "COMPLIANCE" and hold == "ON", (key, mode, hold)
        expected = started + datetime.timedelta(days=45)
        assert abs((until - expected).total_seconds()) < 120, (key, until, expected)
        assert server.head(BUCKET, key)["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert inst.terminate() == 0

    # A bucket without Object Lock: required, so nothing is uploaded, the alarm is raised, the data kept.
    server.create_bucket("plain")
    inst.config["outbox.s3"]["bucket"] = "plain"
    inst.start()
    record_burst(inst, {"1": speech_b, "2": speech_a})
    wait_metric(inst, 'airlock_alarm{alarm="s3_bucket"}', lambda v: v == 1)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 2)
    assert "require_locked_bucket" in inst.log.read_text(errors="replace")
    assert server.objects("plain") == {}
    assert inst.terminate() == 0


def test_an_artifact_changed_in_the_spool_is_never_uploaded(airlock_factory, registry, tmp_path, speech_a):
    """A spooled recording whose bytes change after it was accepted (disk corruption, a stray writer) is refused
    by the multipart path's own SHA-256 check: nothing is completed in the bucket, the s3_object alarm is raised
    and the record stays in the spool."""
    server = S3Server(tmp_path / "s3", registry).start()
    server.create_bucket(BUCKET)
    inst = start_airlock(airlock_factory, tmp_path, server)
    server.kill()
    record_long_call(inst, 200, speech_a)
    wait_metric(inst, 'airlock_outbox_spool_records{sink="objects"}', lambda v: v == 2)
    [artifact] = [p for p in (inst.data_dir / "outbox" / "files").iterdir() if p.stat().st_size > 5 * MIB]
    with open(artifact, "r+b") as f:
        f.seek(3 * MIB)
        byte = f.read(1)
        f.seek(3 * MIB)
        f.write(bytes([byte[0] ^ 0x01]))
    server.start()
    wait_metric(inst, 'airlock_alarm{alarm="s3_object"}', lambda v: v == 1, timeout=90)
    assert "no longer matches its SHA-256" in inst.log.read_text(errors="replace")
    assert not list((server.data / BUCKET).rglob("recording.wav.age"))
    assert server.pending_multipart_uploads() == {}, "the refused upload was aborted"
    assert metrics.value(metrics.parse(inst.metrics_text()), 'airlock_outbox_spool_records{sink="objects"}') == 2
    assert inst.terminate() == 0
