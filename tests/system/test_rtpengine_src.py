"""(b) rtpengine as the SIPREC source: two parties call each other through rtpengine; `subscribe request`
(flags all + SIPREC) yields rtpengine's own SIPREC offer, which a Python UAC sends to Airlock in a multipart
INVITE; `subscribe answer` hands Airlock's SDP back, and rtpengine forks both parties' RTP to Airlock.

rtpengine forwards PCMU->PCMU without transcoding (payload bytes unchanged; it keeps the parties' SSRC,
sequence numbers and timestamps), so the recording is checked sample-exactly like SIPp's."""

from __future__ import annotations

import time

from harness import audio, sip
from harness.airlock import check_manifest, stream_by_label
from harness.rtp import RtpSender
from harness.rtpengine import Rtpengine, TwoPartyCall


def test_rtpengine_siprec_fork_is_recorded(airlock, registry, speech_a, speech_b, tmp_path):
    engine = Rtpengine(registry, tmp_path / "rtpengine").start()
    ng = engine.ng
    parties = TwoPartyCall(engine, f"rtpe-{sip.rand_token(12)}")
    uac = sip.SipUac(airlock.sip)
    try:
        sub = parties.subscribe("airlock-srs")
        _c, siprec_media = sip.parse_sdp(sub["sdp"])
        labels = [m.label for m in siprec_media]
        assert len(labels) == 2 and all(m.direction == "sendonly" for m in siprec_media), sub["sdp"]
        tag_of_label = {label: info["tag"] for label, info in sub["media-labels"].items()}
        assert set(tag_of_label) == set(labels), sub

        ctype, body = sip.multipart(sub["sdp"], sip.metadata_xml(labels))
        resp, _ = uac.invite(body, ctype)
        sip.check_siprec_answer(resp, labels)
        ng.command("subscribe answer", call_id=parties.call_id, to_tag="airlock-srs", sdp=resp.body.decode())

        payload = {"party-a": speech_a, "party-b": speech_b}
        senders = {tag: RtpSender(("127.0.0.1", parties.to_engine[tag]), payload[tag], sock=parties.socks[tag])
                   for tag in ("party-a", "party-b")}
        for s in senders.values():
            s.start()
        reports = {tag: s.join(15) for tag, s in senders.items()}
        time.sleep(0.3)  # let the last forwarded packets land
        assert uac.bye().status == 200
    finally:
        uac.close()
        parties.close()
        engine.stop()

    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    check_manifest(airlock, call_dir, manifest)
    wav = airlock.recording(call_dir)
    assert wav.channels == 2
    streams = stream_by_label(manifest)
    assert set(streams) == set(labels), manifest["streams"]
    for label in labels:
        tag = tag_of_label[label]
        report = reports[tag]
        st = streams[label]
        assert st["packets_received"] == report.packets, (label, st, report.packets)
        assert st["packets_lost"] == 0, st
        audio.assert_exact_run(wav.channel(st["channel"]), report.expected_samples("PCMU"), f"label {label} ({tag})")
