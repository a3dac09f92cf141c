"""Five9 VoiceStream over SIP (docs/design/crate-contracts.md, SRS): the SBC sends one plain SIP INVITE per streamed
leg carrying `X-Five9-StreamingPairId` (no `Require: siprec`, no `+sip.src`, no multipart, `a=sendrecv` although
the media is one-way). Legs with the same pair id are joined into one call, one channel per leg, that ends with the
last leg's BYE. Independent peers: Python UACs (harness/sip.py), real RTP speech (harness/rtp.py) and SDES-SRTP
from libsrtp (harness/srtp.py) over SIP-TLS from Python's ssl module."""

from __future__ import annotations

import shutil
import socket
import uuid

import pytest

from harness import audio, procs, sip
from harness.airlock import check_manifest, stream_by_label
from harness.rtp import RtpSender
from harness.srtp import SdesKey, SrtpSender
from harness.tls import Pki

PAIR_HEADER = "X-Five9-StreamingPairId"


class VoiceStreamLeg(sip.SipUac):
    """A SipUac that looks like the Five9 SBC: no SIPREC signal in Contact (no `+sip.src`)."""

    def _headers(self, method: str, cseq: int, branch: str | None = None) -> list[tuple[str, str]]:
        return [(name, value.replace(";+sip.src", "") if name == "Contact" else value)
                for name, value in super()._headers(method, cseq, branch)]


def leg_offer(port: int, crypto: str | None = None) -> bytes:
    """One `m=audio` PCMU offer, `a=sendrecv`, no `a=label` (as jambonz reports Five9's offers)."""
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    lines = ["v=0", "o=Five9 1234 1 IN IP4 127.0.0.1", "s=VoiceStream", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} {proto} 0", "a=rtpmap:0 PCMU/8000", "a=ptime:20"]
    if crypto:
        lines.append(f"a=crypto:{crypto}")
    lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode()


def pair_header(pair_id: str) -> list[tuple[str, str]]:
    return [(PAIR_HEADER, pair_id)]


def start_leg(server, pair_id: str, transport: str = "UDP", tls_context=None, srtp_suite: str | None = None):
    """(uac, media socket, answered media, sdes key or None) of a leg whose INVITE got 200 (and was ACKed)."""
    media_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media_sock.bind(("127.0.0.1", 0))
    key = SdesKey(srtp_suite) if srtp_suite else None
    uac = VoiceStreamLeg(server, transport, tls_context=tls_context)
    body = leg_offer(media_sock.getsockname()[1], key.crypto_attribute() if key else None)
    resp, _ = uac.invite(body, "application/sdp", extra=pair_header(pair_id), siprec=False)
    assert resp.status == 200, str(resp)
    assert (resp.header("Content-Type") or "").split(";")[0].strip() == "application/sdp"
    _c, media = sip.parse_sdp(resp.body.decode())
    assert len(media) == 1 and media[0].port > 0, resp.body
    assert media[0].direction == "recvonly", f"a sendrecv offer must be answered recvonly: {resp.body!r}"
    if key:
        assert media[0].proto == "RTP/SAVP" and media[0].crypto, resp.body
    return uac, media_sock, media[0], key


def run_pair(server, speech_a: bytes, speech_b: bytes, **leg_kw):
    """Two legs of one pair send speech at once, then BYE one after the other. Returns (pair id, send reports)."""
    pair_id = str(uuid.uuid4())
    legs = [start_leg(server, pair_id, **leg_kw) for _ in range(2)]
    try:
        assert legs[0][0].to_tag != legs[1][0].to_tag, "each leg is a dialog of its own"
        senders = []
        for (uac, sock, media, key), payload in zip(legs, (speech_a, speech_b)):
            dest = ("127.0.0.1", media.port)
            senders.append(SrtpSender(dest, payload, key, sock=sock) if key else RtpSender(dest, payload, sock=sock))
        for sender in senders:
            sender.start()
        reports = [sender.join(15) for sender in senders]
        for uac, *_ in legs:
            assert uac.bye().status == 200
        return pair_id, reports
    finally:
        for uac, sock, *_ in legs:
            uac.close()
            sock.close()


def check_pair_recording(inst, pair_id: str, reports) -> None:
    [call_dir] = inst.wait_calls(1)
    manifest = inst.manifest(call_dir)
    check_manifest(inst, call_dir, manifest)
    assert manifest["source"] == "voicestream_sip", manifest
    assert manifest["end_reason"] == "remote_bye", manifest
    wav = inst.recording(call_dir)
    assert wav.channels == 2
    streams = stream_by_label(manifest)
    assert set(streams) == {"leg-1", "leg-2"}, manifest["streams"]
    assert streams["leg-1"]["channel"] != streams["leg-2"]["channel"], manifest["streams"]
    for label, report in zip(("leg-1", "leg-2"), reports):
        audio.assert_exact_run(wav.channel(streams[label]["channel"]), report.expected_samples("PCMU"), label)
        assert streams[label]["packets_received"] == report.packets, streams[label]
        assert streams[label]["packets_lost"] == 0, streams[label]
    log = inst.log.read_text(errors="replace")
    assert pair_id not in log, "the pair id is PII-adjacent and must never be logged"


def test_two_legs_over_udp_are_one_call_with_a_channel_each(airlock, speech_a, speech_b):
    pair_id, reports = run_pair(airlock.sip, speech_a, speech_b)
    check_pair_recording(airlock, pair_id, reports)
    assert len(airlock.finished_calls()) == 1


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


def test_two_legs_over_tls_with_sdes_srtp(airlock_factory, pki, speech_a, speech_b):
    server = pki.server()
    cert, key = pki.dir / "live-cert.pem", pki.dir / "live-key.pem"
    shutil.copy(server.cert, cert)
    shutil.copy(server.key, key)
    port = procs.free_port(tcp_and_udp=False)
    inst = airlock_factory(overrides={"sip.tls": {"listen": f"127.0.0.1:{port}", "certificate": str(cert),
                                                  "private_key": str(key)}})
    inst.start()
    procs.wait_tcp(port, 10, inst.proc)
    pair_id, reports = run_pair(("127.0.0.1", port), speech_a, speech_b, transport="TLS",
                       tls_context=pki.client_context(), srtp_suite="AES_CM_128_HMAC_SHA1_80")
    check_pair_recording(inst, pair_id, reports)


def test_bad_pair_ids_get_400_and_plain_invites_403(airlock):
    media_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media_sock.bind(("127.0.0.1", 0))
    body = leg_offer(media_sock.getsockname()[1])
    try:
        for extra, status in ((pair_header("x" * 257), 400), (pair_header(""), 400), ([], 403)):
            uac = VoiceStreamLeg(airlock.sip)
            try:
                resp, _ = uac.invite(body, "application/sdp", extra=extra, siprec=False)
            finally:
                uac.close()
            assert resp.status == status, str(resp)
            if status == 400:
                assert PAIR_HEADER in resp.reason, resp.reason
        # 256 bytes is still a pair id.
        uac = VoiceStreamLeg(airlock.sip)
        try:
            resp, _ = uac.invite(body, "application/sdp", extra=pair_header("y" * 256), siprec=False)
            assert resp.status == 200, str(resp)
            assert uac.bye().status == 200
        finally:
            uac.close()
    finally:
        media_sock.close()
    assert airlock.alive()
