"""The last gate and the audit trail, end to end. A call directory a crash left behind (the recovery path
publishes whatever it holds) carries, beside a real recording and manifest, a JSON file with a card number and
a file of an unknown kind: the real artifacts leave, the other two are held in blocked/ with the
leak_blocked alarm raised until blocked/ is emptied. Every artifact created, blocked, uploaded and purged is
in the hash-chained audit log, which `airlock audit verify` accepts together with the checkpoints the
appliance published — and rejects once a line is changed."""

from __future__ import annotations

import json
import shutil
import subprocess

from harness.airlock import check_manifest
from harness.uplink import record_burst, wait_metric


def audit_kinds(inst) -> list[tuple[str, str]]:
    lines = (inst.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    return [(entry["kind"], entry.get("subject", "")) for entry in map(json.loads, lines)]


def verify(inst, checkpoints, log=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(inst.bin), "audit", "verify", str(log or inst.data_dir / "audit" / "audit.jsonl"),
                           "--public-key", str(inst.data_dir / "identity" / "audit-ed25519.key.pub"),
                           "--checkpoints", str(checkpoints)], capture_output=True, text=True)


def test_leaks_are_held_back_and_everything_is_audited(airlock_factory, tmp_path, speech_a, speech_b):
    # A real finished call, to plant in the next appliance's active/ as if a crash had interrupted its hand-over.
    source = airlock_factory("source").start()
    record_burst(source, {"1": speech_a, "2": speech_b})
    [delivered] = source.wait_calls(1, timeout=30)
    assert source.terminate() == 0

    inst = airlock_factory("gate")
    planted = inst.data_dir / "active" / delivered.name
    planted.mkdir(parents=True)
    for name in ("recording.wav.age", "manifest.json"):
        shutil.copy(delivered / name, planted / name)
    (planted / "notes.json").write_text(json.dumps({"text": "card 4111 1111 1111 1111, thanks"}))
    (planted / "notes.txt").write_text("free text nobody checked\n")
    inst.start()

    [call] = inst.wait_calls(1, timeout=30)
    check_manifest(inst, call, inst.manifest(call))
    inst.identity = source.identity  # the planted recording was sealed to the source appliance's recipient
    inst.recording(call)
    assert sorted(p.name for p in call.iterdir()) == ["manifest.json", "recording.wav.age"]
    wait_metric(inst, 'airlock_alarm{alarm="leak_blocked"}', lambda v: v == 1)
    blocked = inst.data_dir / "blocked"
    markers = [json.loads(p.read_text()) for p in blocked.glob("*.blocked.json")]
    reasons = sorted(m["reason"].split(" ")[0].split(":")[0] for m in markers)
    assert reasons == ["card_number", "unknown_kind"], markers
    assert all("4111" not in json.dumps(m) for m in markers)
    assert "4111" not in inst.log.read_text(errors="replace")
    kinds = audit_kinds(inst)
    prefix = str(call.relative_to(inst.uplink))
    assert ("artifact_blocked", f"{prefix}/notes.json") in kinds and ("artifact_blocked", f"{prefix}/notes.txt") in kinds
    for name in ("recording.wav.age", "manifest.json"):
        for kind in ("artifact_created", "artifact_uploaded", "artifact_purged"):
            assert (kind, f"{prefix}/{name}") in kinds, (kind, name, kinds)

    # Reviewed and removed: the alarm clears.
    shutil.rmtree(blocked)
    wait_metric(inst, 'airlock_alarm{alarm="leak_blocked"}', lambda v: v == 0)
    assert inst.terminate() == 0

    # The log and the checkpoints the appliance published (start-up and shutdown at least) verify …
    published = [e for e in map(json.loads, (inst.uplink / "events.jsonl").read_text().splitlines())
                 if e.get("kind") == "checkpoint"]
    assert published, "checkpoints are published as events"
    checkpoints = tmp_path / "checkpoints.jsonl"
    checkpoints.write_text("".join(json.dumps(c, separators=(",", ":")) + "\n" for c in published))
    ok = verify(inst, checkpoints)
    assert ok.returncode == 0 and "valid" in ok.stdout, ok.stdout + ok.stderr
    # … and a changed line does not.
    log = inst.data_dir / "audit" / "audit.jsonl"
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(log.read_text().replace("artifact_uploaded", "artifact_purged", 1))
    bad = verify(inst, checkpoints, tampered)
    assert bad.returncode == 1 and "line" in bad.stderr, bad.stdout + bad.stderr
