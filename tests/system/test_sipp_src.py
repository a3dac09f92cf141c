"""(a) SIPp as the SIPREC SRC: two labelled sendonly streams (listed label 2 first) + RFC 7865 metadata.
The test streams speech to both answered ports from Python and checks the decrypted recording sample-exactly."""

from __future__ import annotations

from harness import audio, g711
from harness.airlock import check_manifest, stream_by_label
from harness.rtp import RtpSender
from harness.sipp import SippSiprecSrc


def test_sipp_siprec_call_is_recorded_sample_exact(airlock, registry, speech_a, speech_b, tmp_path):
    audio_ms = max(len(speech_a), len(speech_b)) // 8
    sipp = SippSiprecSrc(registry, airlock.sip_port, tmp_path / "sipp", call_ms=audio_ms + 1500)
    ports = sipp.ports()

    senders = {"1": RtpSender(("127.0.0.1", ports["1"]), speech_a, g711.PT_PCMU),
               "2": RtpSender(("127.0.0.1", ports["2"]), speech_b, g711.PT_PCMU)}
    for s in senders.values():
        s.start()
    reports = {label: s.join(audio_ms / 1000 + 5) for label, s in senders.items()}
    for s in senders.values():
        s.close()

    sipp.wait()

    [call] = airlock.wait_calls(1)
    manifest = airlock.manifest(call)
    wav = airlock.recording(call)
    assert wav.channels == 2, manifest
    assert wav.sample_rate == 8000
    assert manifest["recording"]["channels"] == 2
    assert manifest["recording"]["sample_rate"] == 8000
    streams = stream_by_label(manifest)
    assert set(streams) == {"1", "2"}, manifest["streams"]
    assert {streams["1"]["channel"], streams["2"]["channel"]} == {0, 1}
    for label, report in reports.items():
        s = streams[label]
        assert s["codec"].upper().startswith("PCMU"), s
        assert s["packets_received"] == report.packets, (label, s, report.packets)
        assert s["packets_lost"] == 0 and s["packets_late"] == 0 and s["packets_duplicate"] == 0, s
        audio.assert_exact_run(wav.channel(s["channel"]), report.expected_samples("PCMU"), f"label {label}")
    check_manifest(airlock, call, manifest)
