"""(b) rtpengine as the SIPREC source: two parties call each other through rtpengine; `subscribe request`
(flags all + SIPREC) yields rtpengine's own SIPREC offer, which a Python UAC sends to Airlock in a multipart
INVITE; `subscribe answer` hands Airlock's SDP back, and rtpengine forks both parties' RTP to Airlock.

rtpengine forwards PCMU->PCMU without transcoding (payload bytes unchanged; it keeps the parties' SSRC,
sequence numbers and timestamps), so the recording is checked sample-exactly like SIPp's."""

from __future__ import annotations

import socket
import time

from harness import audio, sip
from harness.airlock import check_manifest, stream_by_label
from harness.rtp import RtpSender
from harness.rtpengine import Rtpengine, party_sdp


def test_rtpengine_siprec_fork_is_recorded(airlock, registry, speech_a, speech_b, tmp_path):
    engine = Rtpengine(registry, tmp_path / "rtpengine").start()
    ng = engine.ng
    call_id = f"rtpe-{sip.rand_token(12)}"
    socks = {}
    for tag in ("party-a", "party-b"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks[tag] = s
    uac = sip.SipUac(airlock.sip)
    try:
        offer = ng.command("offer", call_id=call_id, from_tag="party-a",
                           sdp=party_sdp(socks["party-a"].getsockname()[1], 1))
        answer = ng.command("answer", call_id=call_id, from_tag="party-a", to_tag="party-b",
                            sdp=party_sdp(socks["party-b"].getsockname()[1], 2))
        # where each party sends its RTP: the port in the SDP rtpengine gave to the *other* side
        to_engine = {"party-a": sip.parse_sdp(answer["sdp"])[1][0].port,
                     "party-b": sip.parse_sdp(offer["sdp"])[1][0].port}

        sub = ng.command("subscribe request", call_id=call_id, flags=["all", "SIPREC"], to_tag="airlock-srs")
        _c, siprec_media = sip.parse_sdp(sub["sdp"])
        labels = [m.label for m in siprec_media]
        assert len(labels) == 2 and all(m.direction == "sendonly" for m in siprec_media), sub["sdp"]
        tag_of_label = {label: info["tag"] for label, info in sub["media-labels"].items()}
        assert set(tag_of_label) == set(labels), sub

        ctype, body = sip.multipart(sub["sdp"], sip.metadata_xml(labels))
        resp, _ = uac.invite(body, ctype)
        sip.check_siprec_answer(resp, labels)
        ng.command("subscribe answer", call_id=call_id, to_tag="airlock-srs", sdp=resp.body.decode())

        payload = {"party-a": speech_a, "party-b": speech_b}
        senders = {tag: RtpSender(("127.0.0.1", to_engine[tag]), payload[tag], sock=socks[tag])
                   for tag in ("party-a", "party-b")}
        for s in senders.values():
            s.start()
        reports = {tag: s.join(15) for tag, s in senders.items()}
        time.sleep(0.3)  # let the last forwarded packets land
        assert uac.bye().status == 200
        ng.command("delete", call_id=call_id, from_tag="party-a")
    finally:
        uac.close()
        for s in socks.values():
            s.close()
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
