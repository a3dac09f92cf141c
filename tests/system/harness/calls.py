"""A SIPREC call driven from Python: SipUac signalling (from `local_ip`) + one RTP socket per labelled stream."""

from __future__ import annotations

import socket

from . import g711, sip
from .rtp import SAMPLES_PER_PACKET, RtpSender, rtp_header
from .srtp import SdesKey, SrtpSender


class SiprecCall:
    """With `srtp_suite`, every stream is offered as RTP/SAVP with its own SDES key and `sender` protects the
    packets with libsrtp (signalling should then be TLS: pass `transport="TLS"` and `tls_context`)."""

    def __init__(self, server: tuple[str, int], labels: list[str], transport: str = "UDP",
                 payload_types: tuple[int, ...] = (0, 8, 101), local_ip: str = "127.0.0.1",
                 tls_context=None, srtp_suite: str | None = None) -> None:
        self.labels = labels
        self.payload_types = payload_types
        self.socks = {}
        for label in labels:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            self.socks[label] = s
        self.version = 1
        self.uac = sip.SipUac(server, transport, local_ip=local_ip, tls_context=tls_context)
        self.keys = {label: SdesKey(srtp_suite) for label in labels} if srtp_suite else {}
        self.media: dict[str, sip.AnswerMedia] = {}
        self.answer: sip.SipMessage | None = None
        self.provisional: list[sip.SipMessage] = []

    def start(self) -> "SiprecCall":
        ctype, body = self._body("sendonly")
        self.answer, self.provisional = self.uac.invite(body, ctype)
        self.media = sip.check_siprec_answer(self.answer, self.labels)
        return self

    def _body(self, direction: str) -> tuple[str, bytes]:
        ports = [self.socks[label].getsockname()[1] for label in self.labels]
        crypto = {label: key.crypto_attribute() for label, key in self.keys.items()} or None
        return sip.siprec_body(self.labels, ports, self.payload_types, direction, version=self.version,
                               crypto=crypto)

    def reinvite(self, direction: str) -> sip.SipMessage:
        """Re-INVITE with every stream set to `direction` (inactive = pause, sendonly = resume)."""
        self.version += 1
        ctype, body = self._body(direction)
        resp, _ = self.uac.invite(body, ctype)
        assert resp.status == 200, str(resp)
        _c, media = sip.parse_sdp(resp.body.decode())
        assert [m.label for m in media] == self.labels, [m.label for m in media]
        self.media = {m.label: m for m in media}
        return resp

    def dest(self, label: str) -> tuple[str, int]:
        m = self.media[label]
        return (m.connection or "127.0.0.1", m.port)

    def sender(self, label: str, payload: bytes, pt: int = g711.PT_PCMU, **kw) -> RtpSender:
        if label in self.keys:
            return SrtpSender(("127.0.0.1", self.media[label].port), payload, self.keys[label], pt=pt,
                              sock=self.socks[label], **kw)
        return RtpSender(("127.0.0.1", self.media[label].port), payload, pt, sock=self.socks[label], **kw)

    def send_burst(self, payloads: dict[str, bytes], ssrc_base: int = 0x5EED) -> None:
        """Every stream's payload as plain RTP (PCMU, 20 ms packets) sent at once, without pacing."""
        for label, payload in payloads.items():
            for k in range(len(payload) // SAMPLES_PER_PACKET):
                packet = rtp_header(g711.PT_PCMU, 100 + k, 8000 + k * SAMPLES_PER_PACKET, ssrc_base + int(label),
                                    marker=k == 0) + payload[k * SAMPLES_PER_PACKET:(k + 1) * SAMPLES_PER_PACKET]
                self.socks[label].sendto(packet, self.dest(label))

    def bye(self) -> sip.SipMessage:
        return self.uac.bye()

    def close(self) -> None:
        self.uac.close()
        for s in self.socks.values():
            s.close()
