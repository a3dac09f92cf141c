"""SIPREC calls driven from Python: (c) pause/resume by re-INVITE, RFC 4733 + SSRC change, TCP signalling,
(e) kill -9 mid-call and recovery on restart, (f) SIGTERM during a call."""

from __future__ import annotations

import signal
import socket
import time

from harness import audio, g711
from harness.airlock import check_manifest, stream_by_label
from harness.calls import SiprecCall
from harness.rtp import SAMPLES_PER_PACKET, Dtmf, RtpSender
from harness.sip import SipUac, parse_sdp, siprec_body

# A crash may lose at most ~1 s of audio: the runtime checkpoints every 0.75 s on a 0.1 s tick and writes audio
# once it is the reorder delay (60 ms) + 90 ms old. Scheduling jitter on a loaded 2-core CI machine gets 0.3 s.
MAX_CRASH_LOSS_S = 1.0
JITTER_MARGIN_S = 0.3


def find_key(obj, needle: str):
    """Values of every key containing `needle` anywhere in a JSON document."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if needle in k.lower():
                found.append(v)
            found += find_key(v, needle)
    elif isinstance(obj, list):
        for v in obj:
            found += find_key(v, needle)
    return found


def split_packets(payload: bytes, at_s: float) -> tuple[bytes, bytes]:
    cut = int(at_s * 8000) // SAMPLES_PER_PACKET * SAMPLES_PER_PACKET
    return payload[:cut], payload[cut:]


def test_pause_and_resume_by_reinvite(airlock, speech_a, speech_b):
    labels = ["1", "2"]
    call = SiprecCall(airlock.sip, labels).start()
    try:
        parts = {"1": split_packets(speech_a, 1.2), "2": split_packets(speech_b, 1.2)}
        first = {label: call.sender(label, parts[label][0]) for label in labels}
        for s in first.values():
            s.start()
        reports_a = {label: s.join(5) for label, s in first.items()}
        paused_at = time.monotonic()

        resp = call.reinvite("inactive")
        _c, media = parse_sdp(resp.body.decode())
        for m in media:
            assert m.direction == "inactive", f"answer to a=inactive must be inactive, got {m.direction}"
        time.sleep(1.5)
        assert airlock.alive()
        call.reinvite("sendonly")
        for m in call.media.values():
            assert m.direction == "recvonly", m
        # Same source resumes: SSRC and sequence continue, the timestamp advanced by the paused wall time.
        gap = int((time.monotonic() - paused_at) * 8000) // SAMPLES_PER_PACKET * SAMPLES_PER_PACKET
        second = {label: call.sender(label, parts[label][1], ssrc=first[label].ssrc, seq0=first[label].seq,
                                     ts0=first[label].ts + gap) for label in labels}
        for s in second.values():
            s.start()
        reports_b = {label: s.join(10) for label, s in second.items()}
        assert call.bye().status == 200
    finally:
        call.close()

    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    check_manifest(airlock, call_dir, manifest)
    wav = airlock.recording(call_dir)
    assert wav.channels == 2
    streams = stream_by_label(manifest)
    for label in labels:
        ch = wav.channel(streams[label]["channel"])
        a = reports_a[label].expected_samples("PCMU")
        b = reports_b[label].expected_samples("PCMU")
        off_a = audio.find_run(ch, a)
        assert off_a >= 0, f"label {label}: audio before the pause not found ({audio.describe_mismatch(ch, a)})"
        off_b = audio.find_run(ch, b, off_a + len(a))
        assert off_b >= 0, f"label {label}: audio after the resume not found ({audio.describe_mismatch(ch, b)})"
        bad = audio.nonzero_outside(ch, [(off_a, off_a + len(a)), (off_b, off_b + len(b))])
        assert not bad, f"label {label}: non-silent samples outside the sent audio at {bad}"
        assert streams[label]["packets_received"] == reports_a[label].packets + reports_b[label].packets
        assert streams[label]["packets_lost"] == 0, streams[label]
    pauses = manifest.get("pauses")
    if pauses is None:  # docs/ARTIFACTS.md names it `pauses`; accept any key about pauses
        pauses = [p for p in find_key(manifest, "pause") if p]
    assert pauses, f"manifest does not list the pause: {manifest}"


def test_dtmf_is_not_audio_and_ssrc_change_is_continuous(airlock, speech_a, speech_b):
    """Label 1 carries RFC 4733 events in place of audio (their slots must be silence, never decoded as PCMU);
    label 2 changes SSRC (and sequence/timestamp bases) halfway with no time gap: the audio must stay contiguous."""
    labels = ["1", "2"]
    call = SiprecCall(airlock.sip, labels).start()
    try:
        s1 = call.sender("1", speech_a, dtmf=[Dtmf(at=40, event=1, packets=6), Dtmf(at=90, event=9, packets=4)])
        s2 = call.sender("2", speech_b, ssrc_change_at=len(speech_b) // SAMPLES_PER_PACKET // 2)
        for s in (s1, s2):
            s.start()
        r1, r2 = s1.join(10), s2.join(10)
        assert r1.event_packets > 0 and len(r2.ssrcs) == 2
        assert call.bye().status == 200
    finally:
        call.close()
    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    check_manifest(airlock, call_dir, manifest)
    wav = airlock.recording(call_dir)
    streams = stream_by_label(manifest)
    # The events' slots carry no audio; their spans (± 20 ms) are silenced, the rest is as sent.
    channel = streams["1"]["channel"]
    silenced = [s for s in manifest["audio_redactions"] if s["channel"] == channel]
    assert [s["kind"] for s in silenced] == ["DTMF", "DTMF"], manifest["audio_redactions"]
    audio.assert_exact_but_silenced(wav.channel(channel), r1.expected_samples("PCMU"), silenced, 8000,
                                    "label 1 (DTMF)")
    audio.assert_exact_run(wav.channel(streams["2"]["channel"]), r2.expected_samples("PCMU"), "label 2 (SSRC)")
    assert streams["1"]["packets_lost"] == 0 and streams["2"]["packets_lost"] == 0, manifest["streams"]


def test_rtp_that_arrived_before_the_bye_is_recorded(airlock, speech_a, speech_b):
    """1 s of RTP per stream sent as one burst and the BYE right after it: everything that reached airlock
    before the BYE is in the recording (the call's end must take in what its sockets and queue still hold)."""
    payloads = {"1": speech_a[:50 * SAMPLES_PER_PACKET], "2": speech_b[:50 * SAMPLES_PER_PACKET]}
    call = SiprecCall(airlock.sip, list(payloads)).start()
    try:
        call.send_burst(payloads)
        assert call.bye().status == 200
    finally:
        call.close()
    [call_dir] = airlock.wait_calls(1)
    streams = stream_by_label(airlock.manifest(call_dir))
    wav = airlock.recording(call_dir)
    for label, payload in payloads.items():
        assert streams[label]["packets_received"] == 50, streams[label]
        audio.assert_exact_run(wav.channel(streams[label]["channel"]), g711.decode(payload, "PCMU"), label)


def test_pcma_over_tcp_signalling(airlock, speech_dir):
    """SIP over TCP, PCMA media: the A-law path decodes sample-exactly too."""
    payload = audio.speech("Your call may be recorded for quality purposes.", speech_dir, "PCMA", "alaw")
    call = SiprecCall(airlock.sip, ["10", "20"], transport="TCP", payload_types=(8, 101)).start()
    try:
        senders = {"10": call.sender("10", payload, g711.PT_PCMA),
                   "20": call.sender("20", split_packets(payload, 1.0)[0], g711.PT_PCMA)}
        for s in senders.values():
            s.start()
        reports = {k: s.join(10) for k, s in senders.items()}
        assert call.bye().status == 200
    finally:
        call.close()
    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    wav = airlock.recording(call_dir)
    streams = stream_by_label(manifest)
    for label, rep in reports.items():
        assert streams[label]["codec"].upper().startswith("PCMA"), streams[label]
        audio.assert_exact_run(wav.channel(streams[label]["channel"]), rep.expected_samples("PCMA"), label)


def test_kill9_mid_call_recovers_on_restart(airlock_factory, speech_a, speech_b):
    inst = airlock_factory(dev_identity=True).start()
    long_a, long_b = speech_a + speech_b, speech_b + speech_a  # ~6 s each, more than we let play
    call = SiprecCall(inst.sip, ["1", "2"]).start()
    senders = {"1": call.sender("1", long_a), "2": call.sender("2", long_b)}
    try:
        for s in senders.values():
            s.start()
        time.sleep(4.0)
        inst.kill9()
        sent = {label: s.report.audio_packets for label, s in senders.items()}
        for s in senders.values():
            s.stop()
    finally:
        for s in senders.values():
            s.join(3)
        call.close()
    assert inst.identity.is_file(), "no dev identity was generated at {data_dir}/dev-identity.txt"

    inst.start()
    [call_dir] = inst.wait_calls(1, timeout=20)
    manifest = inst.manifest(call_dir)
    check_manifest(inst, call_dir, manifest)
    wav = inst.recording(call_dir)
    assert wav.channels == 2
    streams = stream_by_label(manifest)
    allowed = int((MAX_CRASH_LOSS_S + JITTER_MARGIN_S) * 8000)
    for label, report in ((lbl, senders[lbl].report) for lbl in ("1", "2")):
        expected = report.expected_samples("PCMU")
        sent_samples = sent[label] * SAMPLES_PER_PACKET
        ch = wav.channel(streams[label]["channel"])
        offset, n = audio.longest_prefix_run(ch, expected)
        assert offset >= 0, f"label {label}: recovered audio does not start with what was sent " \
                            f"({audio.describe_mismatch(ch, expected)})"
        assert n >= sent_samples - allowed, \
            f"label {label}: recovered {n / 8000:.2f}s of the {sent_samples / 8000:.2f}s sent before kill -9"
        bad = audio.nonzero_outside(ch, [(offset, offset + n)])
        assert not bad, f"label {label}: recovered audio is not a clean prefix (non-silence at {bad})"
    active = inst.data_dir / "active"
    leftovers = [p for p in active.iterdir()] if active.is_dir() else []
    assert not leftovers, f"active/ still holds {leftovers} after recovery"
    assert inst.terminate() == 0


def test_sigterm_ends_calls_with_bye_and_exits_0(airlock, speech_a, speech_b):
    call = SiprecCall(airlock.sip, ["1", "2"]).start()
    senders = {"1": call.sender("1", speech_a), "2": call.sender("2", speech_b)}
    late = SipUac(airlock.sip)
    try:
        for s in senders.values():
            s.start()
        time.sleep(1.5)
        sent_before = {label: s.report.audio_packets for label, s in senders.items()}
        airlock.proc.send_signal(signal.SIGTERM)
        bye = call.uac.wait_request("BYE", airlock.config["shutdown"]["grace_secs"] + 3)
        assert bye is not None, "no BYE from airlock after SIGTERM"
        # Once shutdown is under way (the BYE proves it), new calls are not admitted: a refusal or no answer
        # (sockets already closed), never a 2xx.
        ctype, body = siprec_body(["1"], [40000])
        try:
            resp, _ = late.invite(body, ctype, timeout=1)
            assert not 200 <= resp.status < 300, f"INVITE admitted during shutdown: {resp}"
        except AssertionError as exc:
            if "admitted during shutdown" in str(exc):
                raise
        for s in senders.values():
            s.stop()
        rc = airlock.terminate()  # waits for the exit already under way
        assert rc == 0, f"airlock exited {rc} after SIGTERM"
    finally:
        for s in senders.values():
            s.join(3)
        late.close()
        call.close()
    [call_dir] = airlock.wait_calls(1, timeout=5)
    manifest = airlock.manifest(call_dir)
    check_manifest(airlock, call_dir, manifest)
    wav = airlock.recording(call_dir)
    streams = stream_by_label(manifest)
    for label, s in senders.items():
        expected = s.report.expected_samples("PCMU")
        ch = wav.channel(streams[label]["channel"])
        offset, n = audio.longest_prefix_run(ch, expected)
        assert offset >= 0, f"label {label}: {audio.describe_mismatch(ch, expected)}"
        # everything that arrived before SIGTERM is in the recording (a few packets of scheduling slack)
        assert n >= (sent_before[label] - 5) * SAMPLES_PER_PACKET, (label, n, sent_before[label])


def test_stream_added_by_reinvite_is_recorded(airlock, speech_a):
    """A re-INVITE adds a third stream to a two-channel recording: every channel is taken, so the new stream
    shares (is mixed into) one; its audio must be in that channel, and the manifest must say where."""
    call = SiprecCall(airlock.sip, ["1", "2"]).start()
    try:
        extra = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        extra.bind(("127.0.0.1", 0))
        ports = [call.socks[label].getsockname()[1] for label in ("1", "2")] + [extra.getsockname()[1]]
        ctype, body = siprec_body(["1", "2", "3"], ports, version=2)
        resp, _ = call.uac.invite(body, ctype)
        assert resp.status == 200, str(resp)
        _c, media = parse_sdp(resp.body.decode())
        assert [m.label for m in media] == ["1", "2", "3"] and all(m.port > 0 for m in media), media
        sender = RtpSender(("127.0.0.1", media[2].port), speech_a[:160 * 75], g711.PT_PCMU, sock=extra)
        report = sender.run()
        time.sleep(0.2)
        assert call.bye().status == 200
    finally:
        call.close()
    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    wav = airlock.recording(call_dir)
    assert wav.channels == 2, wav.channels
    channels = {entry["label"]: entry for entry in manifest["channels"]}
    assert set(channels) == {"1", "2", "3"} and channels["3"]["from_ms"] > 0, manifest["channels"]
    streams = stream_by_label(manifest)
    assert streams["3"]["channel"] == channels["3"]["channel"]
    assert streams["3"]["packets_received"] == report.packets, (streams["3"], report.packets)
    # Streams 1 and 2 stayed silent, so the mixed channel holds stream 3's audio unchanged.
    audio.assert_exact_run(wav.channel(channels["3"]["channel"]), report.expected_samples("PCMU"), "label 3")
