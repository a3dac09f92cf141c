"""Personal data stays out of logs and clear-text artifacts, and is kept sealed: a call whose metadata names
distinctive participants and which carries DTMF leaves none of it in airlock's log output, the manifest or the
event log, while the sealed manifest fields decrypt (with the recipient's identity) to exactly that data; DTMF
keys are not kept at all."""

from __future__ import annotations

import json
import time

from harness import audio, g711, sip
from harness.airlock import stream_by_label
from harness.rtp import Dtmf, RtpSender

CALLER = ("sip:+15550199123@pii.example", "Zelda Quintessence")
AGENT = ("sip:agent-77341@pii.example", "Barnaby Oyelaran")
DTMF_EVENT = 7


def test_no_pii_in_logs_or_clear_artifacts_and_sealed_fields_decrypt(airlock, speech_a, speech_b):
    labels = ["1", "2"]
    ctype, body = sip.multipart(
        sip.offer_sdp([sip.OfferStream(label, 41000 + 2 * i) for i, label in enumerate(labels)]),
        sip.metadata_xml(labels, names=[CALLER, AGENT]))
    uac = sip.SipUac(airlock.sip)
    try:
        answer, _ = uac.invite(body, ctype)
        media = sip.check_siprec_answer(answer, labels)
        senders = [RtpSender(("127.0.0.1", media["1"].port), speech_a[:160 * 40], g711.PT_PCMU,
                             dtmf=[Dtmf(at=10, event=DTMF_EVENT, packets=5)]),
                   RtpSender(("127.0.0.1", media["2"].port), speech_b[:160 * 40], g711.PT_PCMU)]
        for s in senders:
            s.start()
        for s in senders:
            s.join(10)
            s.close()
        time.sleep(0.2)
        assert uac.bye().status == 200
        secrets = [CALLER[0], CALLER[1], AGENT[0], AGENT[1], "15550199123", "agent-77341", uac.call_id,
                   uac.from_tag, f"127.0.0.1:{uac.local_port}"]
    finally:
        uac.close()

    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    airlock.terminate()
    clear_texts = {
        "airlock log output": airlock.log.read_text(errors="replace"),
        "manifest.json": (call_dir / "manifest.json").read_text(),
        "events.jsonl": (airlock.uplink / "events.jsonl").read_text(),
    }
    assert "recording call admitted" in clear_texts["airlock log output"], "the log capture is empty"
    for where, text in clear_texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} appears in clear in {where}"

    sealed_metadata = [open_sealed(airlock, call_dir, text) for text in manifest["metadata_sealed"]]
    assert len(sealed_metadata) == 1 and CALLER[0] in sealed_metadata[0] and AGENT[1] in sealed_metadata[0]
    timeline = json.loads(open_sealed(airlock, call_dir, manifest["participants_sealed"]))
    senders_by_label = {span["label"]: span["participant"] for span in timeline}
    assert CALLER[0] in senders_by_label["1"] and AGENT[0] in senders_by_label["2"], timeline
    assert manifest["telephone_event_count"] == 1, manifest["telephone_event_count"]
    # The key itself is stored nowhere, not even sealed; its time is listed as silenced on the stream's channel.
    assert "telephone_events_sealed" not in manifest
    channel = stream_by_label(manifest)["1"]["channel"]
    assert [s["kind"] for s in manifest["audio_redactions"] if s["channel"] == channel] == ["DTMF"], manifest
    assert stream_by_label(manifest)["1"]["packets_received"] > 0


def open_sealed(airlock, call_dir, armored: str) -> str:
    path = call_dir / "sealed.tmp.age"
    path.write_text(armored)
    try:
        return audio.age_decrypt(path, airlock.identity).decode()
    finally:
        path.unlink()
