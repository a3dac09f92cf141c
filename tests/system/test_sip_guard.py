"""Abuse resilience on loopback: the source allow-list (403 with a reason, nothing recorded), the per-source
rate limit (silent drops, counted, other sources unaffected), the per-source TCP connection cap, 513 before
closing a TCP stream over the framing limits, and 400 for too many headers. 127.0.0.2 plays the other source
(all of 127.0.0.0/8 is loopback on Linux)."""

from __future__ import annotations

import socket
import time

import pytest

from harness import audio, metrics
from harness.airlock import check_manifest, stream_by_label
from harness.calls import SiprecCall
from harness.sip import SipUac, StreamFramer, parse_message, request, siprec_body, tcp_exchange, udp_exchange

OTHER = "127.0.0.2"
REFUSED = "airlock_sip_messages_refused_total"
TCP_REFUSED = "airlock_sip_tcp_connections_refused_total"
FORBIDDEN_REASON = "Forbidden: source not allowed"
LABELS = ["1", "2"]


def counter(inst, name: str, reason: str) -> float:
    return metrics.parse(inst.metrics_text()).get(f'{name}{{reason="{reason}"}}', 0.0)


def wait_counter(inst, name: str, reason: str, at_least: float, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while (value := counter(inst, name, reason)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def final(responses):
    finals = [r for r in responses if r.is_response and r.status >= 200]
    assert finals, f"no final response; got {[r.start_line for r in responses]}"
    return finals[0]


def options_status(inst, transport: str, local_ip: str = "127.0.0.1") -> int:
    data = request("OPTIONS", inst.sip, transport)
    if transport == "TCP":
        return final(tcp_exchange(inst.sip, data)).status
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local_ip, 0))
    try:
        return final(udp_exchange(inst.sip, data, sock=sock)).status
    finally:
        sock.close()


def check_recorded(inst, call_dir, reports) -> None:
    manifest = inst.manifest(call_dir)
    check_manifest(inst, call_dir, manifest)
    wav = inst.recording(call_dir)
    streams = stream_by_label(manifest)
    for label, report in reports.items():
        audio.assert_exact_run(wav.channel(streams[label]["channel"]), report.expected_samples("PCMU"),
                               f"label {label}")


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_source_outside_allow_list_gets_403_and_nothing_is_recorded(airlock_factory, speech_a, transport):
    inst = airlock_factory(overrides={"sip": {"allow_sources": ["10.0.0.0/8", "127.0.0.1"]}}).start()
    uac = SipUac(inst.sip, transport, local_ip=OTHER)
    try:
        ctype, body = siprec_body(LABELS, [40000, 40002])
        resp, provisional = uac.invite(body, ctype)
    finally:
        uac.close()
    assert resp.status == 403, resp
    assert resp.reason == FORBIDDEN_REASON, resp
    assert not provisional, "refused before the transaction layer: no 100 Trying"
    assert wait_counter(inst, REFUSED, "source_not_allowed", 2) >= 2, "INVITE and its ACK are counted"

    call = SiprecCall(inst.sip, LABELS, transport=transport).start()
    try:
        senders = {label: call.sender(label, speech_a[: 160 * 50]) for label in LABELS}
        for s in senders.values():
            s.start()
        reports = {label: s.join(5) for label, s in senders.items()}
        assert call.bye().status == 200
    finally:
        call.close()
    [call_dir] = inst.wait_calls(1)
    check_recorded(inst, call_dir, reports)
    time.sleep(0.5)
    assert len(inst.finished_calls()) == 1, "only the allowed source's call is recorded"
    assert options_status(inst, "UDP", OTHER) == 403


def test_flood_from_one_source_is_dropped_and_counted_while_another_records(airlock_factory, speech_a):
    rate, burst, flood = 20, 40, 400
    inst = airlock_factory(overrides={"sip": {"rate_limit_per_sec": rate, "rate_limit_burst": burst}}).start()
    call = SiprecCall(inst.sip, LABELS).start()
    try:
        senders = {label: call.sender(label, speech_a[: 160 * 100]) for label in LABELS}
        for s in senders.values():
            s.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((OTHER, 0))
        try:
            start = time.monotonic()
            for i in range(flood):
                sock.sendto(request("OPTIONS", inst.sip), inst.sip)
                if i % 20 == 19:
                    time.sleep(0.002)  # ~10k/s: a flood, but within what the socket buffer holds
            answers = []
            while (left := start + 1.5 - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    answers.append(parse_message(sock.recvfrom(65535)[0]))
                except socket.timeout:
                    break
            elapsed = time.monotonic() - start
        finally:
            sock.close()
        reports = {label: s.join(10) for label, s in senders.items()}
        assert call.bye().status == 200
    finally:
        call.close()
    assert all(a.status == 200 for a in answers), [a.start_line for a in answers]
    # The kernel may still drop a few datagrams before airlock reads them on a loaded machine: 10% slack.
    assert 0.9 * burst <= len(answers) <= burst + rate * elapsed + 2, f"{len(answers)} answered in {elapsed:.2f}s"
    limited = wait_counter(inst, REFUSED, "rate_limited", flood - len(answers))
    assert limited >= 0.9 * (flood - len(answers)), f"{limited} counted as rate limited"
    metrics.promtool_check(inst.metrics_text())

    [call_dir] = inst.wait_calls(1)
    check_recorded(inst, call_dir, reports)
    time.sleep(1.0)  # 20 tokens back
    assert options_status(inst, "UDP", OTHER) == 200, "the flooding source is served again once it slows down"
    assert inst.alive()


def test_tcp_connections_are_capped_per_source(airlock_factory):
    inst = airlock_factory(overrides={"sip": {"max_tcp_connections_per_source": 2}}).start()
    held = [socket.create_connection(inst.sip, timeout=2, source_address=(OTHER, 0)) for _ in range(2)]
    try:
        time.sleep(0.2)
        with socket.create_connection(inst.sip, timeout=2, source_address=(OTHER, 0)) as third:
            third.settimeout(2)
            try:
                assert third.recv(100) == b"", "the third connection is closed on accept"
            except ConnectionResetError:
                pass
        assert options_status(inst, "TCP") == 200, "another source still connects"
        assert wait_counter(inst, TCP_REFUSED, "per_source_limit", 1) >= 1
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    status = final(tcp_exchange(inst.sip, request("OPTIONS", inst.sip, "TCP"))).status
    assert status == 200


def tcp_send_and_read(inst, data: bytes, timeout: float = 5.0) -> list:
    """Sends `data` (the server may stop reading part-way) and returns what came back before the close."""
    with socket.create_connection(inst.sip, timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        framer, out = StreamFramer(), []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65535)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += framer.feed(chunk)
        return out


@pytest.mark.parametrize("case", ["body_too_large", "header_block_too_large"])
def test_oversized_tcp_message_gets_513_and_server_keeps_serving(airlock, case):
    if case == "body_too_large":
        head = request("INVITE", airlock.sip, "TCP", extra=[("Content-Length", "200000")], content_length=False)
        data = head + b"x" * 200_000
    else:
        head = request("INVITE", airlock.sip, "TCP", content_length=False).rstrip(b"\r\n") + b"\r\n"
        data = head + b"X-Long: " + b"a" * 40_000
    responses = tcp_send_and_read(airlock, data)
    resp = final(responses)
    assert resp.status == 513, resp
    assert resp.reason == "Message Too Large", resp
    assert airlock.alive()
    assert options_status(airlock, "TCP") == 200
    assert options_status(airlock, "UDP") == 200


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_too_many_headers_is_400_with_reason(airlock, transport):
    data = request("OPTIONS", airlock.sip, transport, extra=[("X-Pad", str(i)) for i in range(300)])
    exchange = udp_exchange if transport == "UDP" else tcp_exchange
    resp = final(exchange(airlock.sip, data))
    assert resp.status == 400, resp
    assert resp.reason == "Too many headers", resp
