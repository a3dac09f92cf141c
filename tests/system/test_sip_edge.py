"""(d) Malformed and edge-case requests over raw UDP and TCP: each gets the right answer, nothing crashes, and a
large SIPREC INVITE over UDP is accepted."""

from __future__ import annotations

import socket
import time

import pytest

from harness import sip
from harness.sip import SipUac, request, siprec_body, tcp_exchange, udp_exchange

TRANSPORTS = ["UDP", "TCP"]


def exchange(airlock, transport: str, data: bytes, timeout: float = 3.0) -> list[sip.SipMessage]:
    if transport == "UDP":
        return udp_exchange(airlock.sip, data, timeout)
    return tcp_exchange(airlock.sip, data, timeout)


def final(responses: list[sip.SipMessage]) -> sip.SipMessage:
    finals = [r for r in responses if r.is_response and r.status >= 200]
    assert finals, f"no final response; got {[str(r.start_line) for r in responses]}"
    return finals[0]


def assert_options_ok(airlock, transport: str) -> None:
    resp = final(exchange(airlock, transport, request("OPTIONS", airlock.sip, transport)))
    assert resp.status == 200, resp
    allow = resp.tokens("Allow")
    assert {"invite", "ack", "bye", "options"} <= allow, f"Allow: {resp.all('Allow')}"
    assert resp.all("Supported"), "OPTIONS 200 lacks Supported"


def invite_final(airlock, transport: str, body: bytes, content_type: str | None,
                 extra: list[tuple[str, str]] | None = None) -> sip.SipMessage:
    """An out-of-dialog SIPREC INVITE (ACKed by the UAC if non-2xx); returns the final response."""
    uac = SipUac(airlock.sip, transport)
    try:
        resp, _prov = uac.invite(body, content_type or "", extra=extra) if content_type else \
            _invite_without_body(uac, extra)
        if resp.status == 200:
            uac.bye()
        return resp
    finally:
        uac.close()


def _invite_without_body(uac: SipUac, extra):
    uac.cseq += 1
    branch = sip.new_branch()
    headers = uac._headers("INVITE", uac.cseq, branch) + sip.siprec_headers() + (extra or [])
    uac.last_invite_cseq = uac.cseq
    uac.send(sip.build_message(f"INVITE {uac.remote_target} SIP/2.0", headers))
    resp, prov = uac.wait_response(uac.cseq, "INVITE")
    ack = [(k, resp.header("To") or v) if k == "To" else (k, v) for k, v in uac._headers("ACK", uac.cseq, branch)]
    uac.send(sip.build_message(f"ACK {uac.remote_target} SIP/2.0", ack))
    return resp, prov


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options(airlock, transport):
    assert_options_ok(airlock, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invite_without_body_is_400_with_reason(airlock, transport):
    resp = invite_final(airlock, transport, b"", None)
    assert resp.status == 400, resp
    assert resp.reason.strip(), "400 without a reason phrase"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_broken_multipart_is_400(airlock, transport):
    ctype, body = siprec_body(["1", "2"], [40000, 40002])
    broken = body.replace(b"--uniqueBoundary", b"--otherBoundary")  # no part matches the declared boundary
    resp = invite_final(airlock, transport, broken, ctype)
    assert resp.status == 400, resp
    assert resp.reason.strip()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_text_plain_body_is_415(airlock, transport):
    resp = invite_final(airlock, transport, b"please record this call\r\n", "text/plain")
    assert resp.status == 415, resp


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_require_is_420_with_unsupported(airlock, transport):
    ctype, body = siprec_body(["1", "2"], [40000, 40002])
    uac = SipUac(airlock.sip, transport)
    try:
        uac.cseq += 1
        branch = sip.new_branch()
        headers = uac._headers("INVITE", uac.cseq, branch) + [("Require", "siprec, foo"),
                                                                ("Content-Type", ctype)]
        uac.send(sip.build_message(f"INVITE {uac.remote_target} SIP/2.0", headers, body))
        resp, _ = uac.wait_response(uac.cseq, "INVITE")
        ack = [(k, resp.header("To") or v) if k == "To" else (k, v) for k, v in uac._headers("ACK", uac.cseq, branch)]
        uac.send(sip.build_message(f"ACK {uac.remote_target} SIP/2.0", ack))
    finally:
        uac.close()
    assert resp.status == 420, resp
    assert "foo" in resp.tokens("Unsupported"), f"Unsupported: {resp.all('Unsupported')}"
    assert "siprec" not in resp.tokens("Unsupported")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_only_g729_offered_is_488(airlock, transport):
    ctype, body = siprec_body(["1", "2"], [40000, 40002], payload_types=(18,))
    resp = invite_final(airlock, transport, body, ctype)
    assert resp.status == 488, resp


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_method_is_501_or_405(airlock, transport):
    resp = final(exchange(airlock, transport, request("FROBNICATE", airlock.sip, transport)))
    assert resp.status in (501, 405), resp
    if resp.status == 405:
        assert resp.all("Allow"), "405 without Allow"


GARBAGE = [
    b"\x00\x01\x02\x03" * 64,
    b"INVITE\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\nshort",
    b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP\r\nCSeq: banana\r\n\r\n",
    "INVITE sip:\u00e9\u00e9@[::1 SIP/2.0\r\nCall-ID: \u2603\r\n\r\n".encode(),
    b"\r\n\r\n\r\n",
    bytes(range(256)) * 20,
]


def test_garbage_does_not_crash_udp(airlock):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for g in GARBAGE:
            s.sendto(g, airlock.sip)
    finally:
        s.close()
    time.sleep(0.3)
    assert airlock.alive(), "airlock died on garbage"
    assert_options_ok(airlock, "UDP")


def test_garbage_does_not_crash_tcp(airlock):
    for g in GARBAGE:
        try:
            with socket.create_connection(airlock.sip, timeout=2) as s:
                s.sendall(g)
                s.settimeout(0.3)
                try:
                    s.recv(65535)
                except (socket.timeout, ConnectionError):
                    pass
        except ConnectionError:
            pass
    # an endless header with no blank line must hit the size cap, not grow memory forever
    with socket.create_connection(airlock.sip, timeout=2) as s:
        try:
            s.sendall(b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Long: " + b"a" * 300_000)
        except ConnectionError:
            pass
    time.sleep(0.3)
    assert airlock.alive(), "airlock died on garbage"
    assert_options_ok(airlock, "TCP")
    assert_options_ok(airlock, "UDP")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_large_invite_accepted(airlock, transport):
    ctype, body = siprec_body(["1", "2"], [40000, 40002], metadata_padding=10_000)
    uac = SipUac(airlock.sip, transport)
    try:
        resp, prov = uac.invite(body, ctype)
        size = len(body)
        assert size > 10_000
        sip.check_siprec_answer(resp, ["1", "2"])
        assert any(p.status == 100 for p in prov), "no 100 Trying before the 200"
        assert uac.bye().status == 200
    finally:
        uac.close()


def test_capacity_is_503_with_retry_after(airlock_factory):
    inst = airlock_factory(overrides={"sip": {"max_calls": 1}}).start()
    first = SipUac(inst.sip)
    second = SipUac(inst.sip)
    try:
        ctype, body = siprec_body(["1", "2"], [40000, 40002])
        resp, _ = first.invite(body, ctype)
        assert resp.status == 200, resp
        ctype, body = siprec_body(["1", "2"], [40004, 40006])
        resp, _ = second.invite(body, ctype)
        assert resp.status == 503, resp
        assert (resp.header("Retry-After") or "").strip().split(";")[0].strip().isdigit(), resp
        assert first.bye().status == 200
    finally:
        first.close()
        second.close()
