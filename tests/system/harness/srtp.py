"""SDES-SRTP for the tests through libsrtp (PyPI pylibsrtp): an independent SRTP implementation that protects
what `RtpSender` sends, keyed from an `a=crypto` line, and keeps the protected packets so a test can replay
or tamper with them afterwards."""

from __future__ import annotations

import base64
import os

import pylibsrtp

from .rtp import RtpSender

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
}


class SdesKey:
    """A master key + salt for `suite`, random unless given; `crypto_attribute(tag)` is its SDP line value."""

    def __init__(self, suite: str, key_and_salt: bytes | None = None) -> None:
        self.suite = suite
        profile, length = PROFILES[suite]
        self.profile = profile
        self.key_and_salt = key_and_salt or os.urandom(length)

    def crypto_attribute(self, tag: int = 1) -> str:
        return f"{tag} {self.suite} inline:{base64.b64encode(self.key_and_salt).decode()}"

    def session(self) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(key=self.key_and_salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                  srtp_profile=self.profile)
        return pylibsrtp.Session(policy=policy)


class SrtpSender(RtpSender):
    """`RtpSender` whose packets are SRTP-protected with `key` (swappable mid-stream with `rekey`)."""

    def __init__(self, dest, payload, key: SdesKey, **kwargs) -> None:
        super().__init__(dest, payload, **kwargs)
        self.key = key
        self.session = key.session()
        self.protected: list[bytes] = []

    def rekey(self, key: SdesKey) -> None:
        self.key = key
        self.session = key.session()

    def _send(self, packet: bytes) -> None:
        protected = self.session.protect(packet)
        self.protected.append(protected)
        self.sock.sendto(protected, self.dest)
        self.report.packets += 1
