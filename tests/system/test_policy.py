"""The site's compliance policy, end to end: what may leave per artifact kind (a transcript-only site keeps
recordings in), which sealed manifest fields go out, the retention class stamped into every manifest, and a
changed policy audited once."""

from __future__ import annotations

import json

from harness.uplink import record_burst


def audit_entries(inst) -> list[dict]:
    return [json.loads(line) for line in (inst.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]


def test_policy_decides_what_leaves_and_is_stamped_and_audited(airlock_factory, speech_a, speech_b):
    policy = {"recording": "never", "manifest_sealed": ["metadata_sealed"], "default_retention_class": "short",
              "legal_hold": True}
    inst = airlock_factory(overrides={"policy": policy, "policy.retention_classes": {"short": 90, "long": 3650}})
    inst.start()
    record_burst(inst, {"1": speech_a, "2": speech_b})
    [call] = inst.wait_calls(1, timeout=30)
    # The recording never leaves: only the manifest is delivered, stamped with the policy.
    assert sorted(p.name for p in call.iterdir()) == ["manifest.json"]
    manifest = inst.manifest(call)
    stamp = manifest["policy"]
    assert (stamp["recording"], stamp["retention_class"], stamp["retention_days"], stamp["legal_hold"]) == \
        ("never", "short", 90, True), stamp
    assert len(stamp["hash"]) == 64
    assert "metadata_sealed" in manifest and "participants_sealed" not in manifest
    assert not list((inst.data_dir / "active").iterdir()), "nothing of the call is left behind"
    entries = audit_entries(inst)
    prefix = str(call.relative_to(inst.uplink))
    purged = [e for e in entries if e["kind"] == "artifact_purged" and e["subject"] == f"{prefix}/recording.wav.age"]
    assert purged and purged[0]["detail"]["reason"].startswith("policy"), purged
    assert [e["subject"] for e in entries if e["kind"] == "policy_changed"] == [f"sha256:{stamp['hash']}"]
    assert inst.terminate() == 0

    # The same policy again: no new policy entry; a changed one: audited once.
    inst.start()
    assert inst.terminate() == 0
    assert len([e for e in audit_entries(inst) if e["kind"] == "policy_changed"]) == 1
    inst.config["policy"]["recording"] = "encrypted"
    inst.start()
    assert inst.terminate() == 0
    changes = [e for e in audit_entries(inst) if e["kind"] == "policy_changed"]
    assert len(changes) == 2 and changes[1]["detail"]["recording"] == "encrypted", changes
