"""(a) SIPp as the SIPREC SRC: two labelled sendonly streams (listed label 2 first) + RFC 7865 metadata.
The test streams speech to both answered ports from Python and checks the decrypted recording sample-exactly."""

from __future__ import annotations

import time

from harness import audio, g711, procs
from harness.airlock import check_manifest, stream_by_label
from harness.rtp import RtpSender
from conftest import SIPP_DIR


def test_sipp_siprec_call_is_recorded_sample_exact(airlock, registry, speech_a, speech_b, tool, tmp_path):
    sipp = tool("sipp")
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    audio_ms = max(len(speech_a), len(speech_b)) // 8
    call_ms = audio_ms + 1500
    proc = registry.start("sipp", [
        sipp, f"127.0.0.1:{airlock.sip_port}", "-sf", str(SIPP_DIR / "siprec_src_two_streams.xml"),
        "-i", "127.0.0.1", "-p", str(procs.free_port()), "-mi", "127.0.0.1", "-mp", str(procs.free_udp_pair()), "-t", "u1", "-m", "1", "-d", str(call_ms),
        "-timeout", "30", "-timeout_error", "-nostdin", "-trace_msg", "-trace_logs", "-trace_err",
    ], log=workdir / "sipp.out", cwd=workdir)

    ports_file = workdir / "ports.txt"
    deadline = time.monotonic() + 10
    while not ports_file.exists():
        assert proc.poll() is None, f"sipp exited {proc.returncode} before the call was set up"
        assert time.monotonic() < deadline, "sipp did not get a 200 OK within 10 s"
        time.sleep(0.01)
    port_1, port_2 = (int(p) for p in ports_file.read_text().split())

    senders = {"1": RtpSender(("127.0.0.1", port_1), speech_a, g711.PT_PCMU),
               "2": RtpSender(("127.0.0.1", port_2), speech_b, g711.PT_PCMU)}
    for s in senders.values():
        s.start()
    reports = {label: s.join(audio_ms / 1000 + 5) for label, s in senders.items()}
    for s in senders.values():
        s.close()

    rc = proc.wait(call_ms / 1000 + 20)
    assert rc == 0, f"sipp exit {rc}\n{(workdir / 'sipp.out').read_text(errors='replace')[-3000:]}"

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
