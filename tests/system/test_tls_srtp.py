"""Secure SIPREC: SIP over TLS (rustls), SDES-SRTP media, mutual TLS with an allow-list, certificate reload.

Independent peers: Python's ssl module (OpenSSL) as the TLS client, rtpengine 10.5 as an SRC that offers
SDES-SRTP on its own (SIPREC subscribe with RTP/SAVP) and protects the forked media itself, and libsrtp (PyPI
pylibsrtp) for SRTP packets with chosen suites, keys, tampering and replays."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import time

import pytest

from harness import audio, metrics, procs, sip
from harness.airlock import check_manifest, stream_by_label
from harness.rtp import RtpSender
from harness.rtpengine import Rtpengine, TwoPartyCall
from harness.srtp import SdesKey, SrtpSender
from harness.tls import Pki, peer_common_name

SUITES = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM"]


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


def start_tls_airlock(airlock_factory, pki: Pki, **tls):
    """Airlock with a TLS listener whose certificate files can be replaced by the test (`inst.tls_cert`)."""
    server = pki.server()
    cert, key = pki.dir / "live-cert.pem", pki.dir / "live-key.pem"
    shutil.copy(server.cert, cert)
    shutil.copy(server.key, key)
    port = procs.free_port(tcp_and_udp=False)
    inst = airlock_factory(overrides={"sip.tls": {"listen": f"127.0.0.1:{port}", "certificate": str(cert),
                                                  "private_key": str(key), **tls}})
    inst.start()
    procs.wait_tcp(port, 10, inst.proc)
    inst.tls = ("127.0.0.1", port)
    inst.tls_cert, inst.tls_key = cert, key
    return inst


def srtp_offer(labels: list[str], ports: list[int], crypto: dict[str, list[str]], version: int = 1):
    streams = [sip.OfferStream(label, port, protocol="RTP/SAVP", crypto=tuple(crypto[label]))
               for label, port in zip(labels, ports)]
    return sip.multipart(sip.offer_sdp(streams, version=version), sip.metadata_xml(labels))


def metric(inst, name: str) -> float:
    return metrics.value(metrics.parse(inst.metrics_text()), name)


def wait_metric(inst, name: str, at_least: float, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        seen = metric(inst, name)
        if seen >= at_least or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def test_rtpengine_sdes_srtp_fork_over_tls_is_recorded(airlock_factory, pki, registry, speech_a, speech_b,
                                                       tmp_path):
    inst = start_tls_airlock(airlock_factory, pki)
    engine = Rtpengine(registry, tmp_path / "rtpengine").start()
    ng = engine.ng
    parties = TwoPartyCall(engine, f"rtpe-srtp-{sip.rand_token(12)}")
    uac = sip.SipUac(inst.tls, "TLS", tls_context=pki.client_context())
    try:
        sub = parties.subscribe("airlock-srs", **{"transport protocol": "RTP/SAVP"})
        _c, siprec_media = sip.parse_sdp(sub["sdp"])
        labels = [m.label for m in siprec_media]
        assert all(m.proto == "RTP/SAVP" and m.crypto for m in siprec_media), sub["sdp"]
        tag_of_label = {label: info["tag"] for label, info in sub["media-labels"].items()}

        ctype, body = sip.multipart(sub["sdp"], sip.metadata_xml(labels))
        resp, _ = uac.invite(body, ctype)
        answered = sip.check_siprec_answer(resp, labels)
        assert "transport=tls" in (resp.header("Contact") or ""), resp.header("Contact")
        for label, m in answered.items():
            assert m.proto == "RTP/SAVP", f"an SRTP offer must never get a plain RTP answer: {resp.body!r}"
            assert len(m.crypto) == 1, m.crypto
            offered = [c.split()[:2] for c in next(x for x in siprec_media if x.label == label).crypto]
            assert m.crypto[0].split()[:2] in offered, (m.crypto, offered)
        ng.command("subscribe answer", call_id=parties.call_id, to_tag="airlock-srs", sdp=resp.body.decode())

        payload = {"party-a": speech_a, "party-b": speech_b}
        senders = {tag: RtpSender(("127.0.0.1", parties.to_engine[tag]), payload[tag], sock=parties.socks[tag])
                   for tag in ("party-a", "party-b")}
        for s in senders.values():
            s.start()
        reports = {tag: s.join(15) for tag, s in senders.items()}
        time.sleep(0.3)
        assert uac.bye().status == 200
    finally:
        uac.close()
        parties.close()
        engine.stop()

    [call_dir] = inst.wait_calls(1)
    manifest = inst.manifest(call_dir)
    check_manifest(inst, call_dir, manifest)
    wav = inst.recording(call_dir)
    streams = stream_by_label(manifest)
    for label in labels:
        report = reports[tag_of_label[label]]
        st = streams[label]
        assert st["srtp"]["suite"] in SUITES, st
        assert st["srtp"]["packets_authenticated"] == report.packets, st
        assert st["srtp"]["auth_failures"] == 0, st
        assert st["packets_received"] == report.packets and st["packets_lost"] == 0, st
        audio.assert_exact_run(wav.channel(st["channel"]), report.expected_samples("PCMU"), f"label {label}")
    assert metric(inst, "airlock_srtp_packets_authenticated_total") >= sum(r.packets for r in reports.values())
    assert metric(inst, 'airlock_tls_handshakes_total{result="ok"}') >= 1


@pytest.mark.parametrize("suite", SUITES)
def test_libsrtp_suite_tampered_and_replayed_packets_are_counted_and_dropped(airlock_factory, pki, speech_a,
                                                                             suite):
    inst = start_tls_airlock(airlock_factory, pki)
    key = SdesKey(suite)
    media_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media_sock.bind(("127.0.0.1", 0))
    uac = sip.SipUac(inst.tls, "TLS", tls_context=pki.client_context())
    one_second = speech_a[:160 * 50]
    try:
        ctype, body = srtp_offer(["1"], [media_sock.getsockname()[1]], {"1": [key.crypto_attribute(3)]})
        resp, _ = uac.invite(body, ctype)
        answered = sip.check_siprec_answer(resp, ["1"])["1"]
        assert answered.proto == "RTP/SAVP" and answered.crypto[0].startswith(f"3 {suite} inline:"), resp.body
        sender = SrtpSender(("127.0.0.1", answered.port), one_second, key, sock=media_sock)
        report = sender.run()
        genuine = sender.protected
        tampered = bytearray(genuine[10])
        tampered[20] ^= 0x01  # one payload bit
        media_sock.sendto(bytes(tampered), ("127.0.0.1", answered.port))
        media_sock.sendto(genuine[20], ("127.0.0.1", answered.port))  # a replay
        time.sleep(0.3)
        assert uac.bye().status == 200
    finally:
        uac.close()
        media_sock.close()

    [call_dir] = inst.wait_calls(1)
    manifest = inst.manifest(call_dir)
    [stream] = manifest["streams"]
    assert stream["srtp"] == {"suite": suite, "packets_authenticated": report.packets, "auth_failures": 1,
                              "replays": 1, "malformed": 0, "rekeys": 0}, stream
    assert stream["packets_received"] == report.packets and stream["packets_duplicate"] == 0, stream
    wav = inst.recording(call_dir)
    audio.assert_exact_run(wav.channel(0), report.expected_samples("PCMU"), suite)
    assert metric(inst, 'airlock_srtp_packets_dropped_total{reason="auth_failed"}') == 1
    assert metric(inst, 'airlock_srtp_packets_dropped_total{reason="replayed"}') == 1


def test_reinvite_with_a_new_key_rekeys_without_losing_audio(airlock_factory, pki, speech_a):
    inst = start_tls_airlock(airlock_factory, pki)
    first, second = SdesKey("AES_CM_128_HMAC_SHA1_80"), SdesKey("AES_CM_128_HMAC_SHA1_80")
    media_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media_sock.bind(("127.0.0.1", 0))
    port = media_sock.getsockname()[1]
    uac = sip.SipUac(inst.tls, "TLS", tls_context=pki.client_context())
    try:
        ctype, body = srtp_offer(["1"], [port], {"1": [first.crypto_attribute(1)]})
        resp, _ = uac.invite(body, ctype)
        answered = sip.check_siprec_answer(resp, ["1"])["1"]
        sender = SrtpSender(("127.0.0.1", answered.port), speech_a[:160 * 150], first, sock=media_sock)
        sender.start()
        time.sleep(1.0)
        ctype, body = srtp_offer(["1"], [port], {"1": [second.crypto_attribute(1)]}, version=2)
        resp, _ = uac.invite(body, ctype)
        assert resp.status == 200, str(resp)
        sender.rekey(second)  # after the answer, as an SRC would; packets still in flight used the old key
        report = sender.join(10)
        time.sleep(0.3)
        assert uac.bye().status == 200
    finally:
        uac.close()
        media_sock.close()
    [call_dir] = inst.wait_calls(1)
    [stream] = inst.manifest(call_dir)["streams"]
    assert stream["srtp"]["rekeys"] == 1, stream
    assert stream["srtp"]["auth_failures"] == 0, stream
    assert stream["srtp"]["packets_authenticated"] == report.packets, stream
    audio.assert_exact_run(inst.recording(call_dir).channel(0), report.expected_samples("PCMU"), "rekeyed")


def test_srtp_offers_we_cannot_honour_get_488_and_nothing_is_recorded(airlock_factory, pki):
    inst = start_tls_airlock(airlock_factory, pki)
    key = SdesKey("AES_CM_128_HMAC_SHA1_80")
    # SDES keys over plain UDP: refused (the keys were readable on the path)
    uac = sip.SipUac(inst.sip, "UDP")
    try:
        ctype, body = srtp_offer(["1"], [40000], {"1": [key.crypto_attribute()]})
        resp, _ = uac.invite(body, ctype)
        assert (resp.status, resp.reason) == (488, "SDES-SRTP Requires SIP over TLS"), str(resp)
    finally:
        uac.close()
    # over TLS, but only suites we do not implement, or an MKI
    unsupported = [f"1 F8_128_HMAC_SHA1_80 inline:{'A' * 40}",
                   key.crypto_attribute(2) + "|2^20|1:4"]
    uac = sip.SipUac(inst.tls, "TLS", tls_context=pki.client_context())
    try:
        ctype, body = srtp_offer(["1"], [40000], {"1": unsupported})
        resp, _ = uac.invite(body, ctype)
        assert (resp.status, resp.reason) == (488, "No Acceptable SRTP Crypto Suite"), str(resp)
    finally:
        uac.close()
    time.sleep(0.5)
    assert inst.finished_calls() == [] and metric(inst, "airlock_active_calls") == 0


def test_insecure_switch_accepts_sdes_over_udp(airlock_factory):
    inst = airlock_factory(overrides={"sip": {"insecure_sdes_without_tls": True}}).start()
    assert "sip.insecure_sdes_without_tls is set" in inst.log.read_text(), "the switch is announced loudly"
    key = SdesKey("AEAD_AES_128_GCM")
    uac = sip.SipUac(inst.sip, "UDP")
    try:
        ctype, body = srtp_offer(["1"], [40000], {"1": [key.crypto_attribute()]})
        resp, _ = uac.invite(body, ctype)
        answered = sip.check_siprec_answer(resp, ["1"])["1"]
        assert answered.proto == "RTP/SAVP" and answered.crypto[0].startswith("1 AEAD_AES_128_GCM "), resp.body
        assert uac.bye().status == 200
    finally:
        uac.close()


def tls_options(server: tuple[str, int], ctx: ssl.SSLContext) -> int | None:
    """An OPTIONS over a fresh TLS connection: the response status, or None when the server refused us."""
    try:
        with socket.create_connection(server, timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
                conn.sendall(sip.request("OPTIONS", server, "TLS", conn.getsockname()[1]))
                framer = sip.StreamFramer()
                while True:
                    data = conn.recv(65535)
                    if not data:
                        return None
                    for message in framer.feed(data):
                        if message.is_response and message.status >= 200:
                            return message.status
    except (ssl.SSLError, ConnectionError, socket.timeout):
        return None


def test_mutual_tls_accepts_listed_clients_and_refuses_others(airlock_factory, pki):
    allowed = pki.issue("sbc1", "sbc1.test", ["DNS:sbc1.test"], server=False)
    unlisted = pki.issue("sbc9", "sbc9.test", ["DNS:sbc9.test"], server=False)
    rogue = pki.issue("rogue", "sbc1.test", ["DNS:sbc1.test"], server=False, ca=pki.rogue_ca)
    inst = start_tls_airlock(airlock_factory, pki, client_ca=str(pki.ca.cert), allowed_clients=["sbc1.test"],
                             handshake_timeout_secs=1)
    failed_before = wait_metric(inst, 'airlock_tls_handshakes_total{result="failed"}', 1)  # the start-up probe
    assert tls_options(inst.tls, pki.client_context(allowed)) == 200
    assert tls_options(inst.tls, pki.client_context(unlisted)) is None
    assert tls_options(inst.tls, pki.client_context(rogue)) is None
    assert tls_options(inst.tls, pki.client_context()) is None
    with socket.create_connection(inst.tls, timeout=5) as silent:  # never starts a handshake
        silent.settimeout(5)
        assert silent.recv(1) == b"", "the server closes a connection that does not handshake in time"
    assert wait_metric(inst, 'airlock_tls_handshakes_total{result="client_not_allowed"}', 1) == 1
    assert wait_metric(inst, 'airlock_tls_handshakes_total{result="failed"}', failed_before + 2) == failed_before + 2
    assert wait_metric(inst, 'airlock_tls_handshakes_total{result="timeout"}', 1) == 1
    assert metric(inst, 'airlock_tls_handshakes_total{result="ok"}') == 1
    assert tls_options(inst.tls, pki.client_context(allowed)) == 200, "still serving"
    after_start = inst.log.read_text().split("airlock is recording", 1)[-1].split("\n", 1)[-1]
    for secret in ("sbc9.test", "sbc1.test", "127.0.0.1"):
        assert secret not in after_start, f"{secret} reached the log"
    assert "not on the allow-list" in after_start


def test_certificate_reload_mid_call_keeps_the_call(airlock_factory, pki, speech_a):
    inst = start_tls_airlock(airlock_factory, pki)
    assert metric(inst, "airlock_tls_certificate_expiry_timestamp_seconds") > time.time()
    ctx = pki.client_context()
    call_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    call_sock.bind(("127.0.0.1", 0))
    uac = sip.SipUac(inst.tls, "TLS", tls_context=ctx)
    try:
        assert peer_common_name(uac.server_certificate()) == "airlock.test"
        ctype, body = sip.siprec_body(["1"], [call_sock.getsockname()[1]])
        resp, _ = uac.invite(body, ctype)
        answered = sip.check_siprec_answer(resp, ["1"])["1"]
        sender = RtpSender(("127.0.0.1", answered.port), speech_a[:160 * 150], sock=call_sock)
        sender.start()
        time.sleep(0.5)

        renewed = pki.server("renewed", cn="airlock-renewed.test")
        for source, target in ((renewed.key, inst.tls_key), (renewed.cert, inst.tls_cert)):
            shutil.copy(source, f"{target}.new")
            os.replace(f"{target}.new", target)
        assert wait_metric(inst, 'airlock_tls_certificate_reloads_total{result="ok"}', 1) >= 1
        with socket.create_connection(inst.tls, timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as fresh:
                assert peer_common_name(fresh) == "airlock-renewed.test"

        # a broken file and SIGHUP: the reload fails, the certificate in use stays
        inst.tls_cert.write_text("not a certificate\n")
        inst.proc.send_signal(signal.SIGHUP)
        assert wait_metric(inst, 'airlock_tls_certificate_reloads_total{result="failed"}', 1) >= 1
        assert tls_options(inst.tls, ctx) == 200

        report = sender.join(10)
        time.sleep(0.3)
        assert uac.bye().status == 200, "the connection from before the reload still carries the dialog"
    finally:
        uac.close()
        call_sock.close()
    [call_dir] = inst.wait_calls(1)
    manifest = inst.manifest(call_dir)
    assert manifest["end_reason"] == "remote_bye", manifest
    audio.assert_exact_run(inst.recording(call_dir).channel(0), report.expected_samples("PCMU"), "reload")


def test_tls_versions_and_idle_timeout(airlock_factory, pki):
    inst = start_tls_airlock(airlock_factory, pki, idle_timeout_secs=1)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = pki.client_context()
        ctx.minimum_version = ctx.maximum_version = version
        assert tls_options(inst.tls, ctx) == 200, version
    old = pki.client_context()
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    assert tls_options(inst.tls, old) is None, "TLS 1.1 is refused"
    with socket.create_connection(inst.tls, timeout=5) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname="localhost") as idle:
            idle.settimeout(5)
            started = time.monotonic()
            assert idle.recv(1) == b"", "an idle connection is closed"
            assert 0.5 < time.monotonic() - started < 4


def test_srtcp_lookalikes_never_keep_a_silent_srtp_call_alive(airlock_factory, pki, speech_a):
    inst = start_tls_airlock(airlock_factory, pki)
    inst.config["media"]["inactivity_timeout_secs"] = 2
    inst.terminate()
    inst.start()
    procs.wait_tcp(inst.tls[1], 10, inst.proc)
    key = SdesKey("AES_CM_128_HMAC_SHA1_80")
    media_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media_sock.bind(("127.0.0.1", 0))
    uac = sip.SipUac(inst.tls, "TLS", tls_context=pki.client_context())
    try:
        ctype, body = srtp_offer(["1"], [media_sock.getsockname()[1]], {"1": [key.crypto_attribute()]})
        resp, _ = uac.invite(body, ctype)
        port = sip.check_siprec_answer(resp, ["1"])["1"].port
        SrtpSender(("127.0.0.1", port), speech_a[:160 * 25], key, sock=media_sock).run()
        fake_rtcp = bytes([0x81, 200, 0, 6]) + os.urandom(24)  # unauthenticated "SRTCP"
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and uac.wait_request("BYE", 0.1) is None:
            media_sock.sendto(fake_rtcp, ("127.0.0.1", port))
        assert uac.wait_request("BYE", 0.1) is not None, "the call must time out despite the fake RTCP"
    finally:
        uac.close()
        media_sock.close()
    [call_dir] = inst.wait_calls(1)
    assert inst.manifest(call_dir)["end_reason"] == "rtp_timeout"
    assert metric(inst, 'airlock_srtp_packets_dropped_total{reason="srtcp_ignored"}') > 5


def test_tls_from_a_source_outside_the_allow_list_is_closed_before_the_handshake(airlock_factory, pki):
    inst = start_tls_airlock(airlock_factory, pki)
    inst.config["sip"]["allow_sources"] = ["127.0.0.1"]
    inst.terminate()
    inst.start()
    procs.wait_tcp(inst.tls[1], 10, inst.proc)
    ctx = pki.client_context()
    assert tls_options(inst.tls, ctx) == 200
    with socket.create_connection(inst.tls, timeout=5, source_address=("127.0.0.2", 0)) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert metric(inst, 'airlock_sip_tcp_connections_refused_total{reason="source_not_allowed"}') == 1


def test_rate_limited_requests_over_a_stream_get_503_not_silence(airlock_factory, pki):
    inst = start_tls_airlock(airlock_factory, pki)
    inst.config["sip"].update(rate_limit_per_sec=1, rate_limit_burst=1)
    inst.terminate()
    inst.start()
    procs.wait_tcp(inst.tls[1], 10, inst.proc)
    with socket.create_connection(inst.tls, timeout=5) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname="localhost") as conn:
            for _ in range(6):
                conn.sendall(sip.request("OPTIONS", inst.tls, "TLS", conn.getsockname()[1]))
            framer, answers = sip.StreamFramer(), []
            while len(answers) < 6:
                data = conn.recv(65535)
                assert data, f"connection closed after {len(answers)} answers"
                answers += framer.feed(data)
    statuses = [(a.status, a.reason) for a in answers]
    assert (200, "OK") in statuses and (503, "Rate Limited") in statuses, statuses
    assert all(a.header("Retry-After") == "1" for a in answers if a.status == 503)
