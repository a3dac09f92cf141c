"""Codecs beyond G.711 through the whole path (SDP negotiation → RTP → decode → WAV → age):
L16 at 8 and 16 kHz is checked sample-exactly; G.722 (16 kHz audio on an 8 kHz RTP clock, lossy) is checked by
its signal-to-noise ratio against the source speech after alignment."""

from __future__ import annotations

import math
import random
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path

from harness import audio, sip
from harness.airlock import stream_by_label
from harness.rtp import rtp_header

PTIME_S = 0.020
PT_L16 = 96
PT_G722 = 9


def speech_pcm(workdir: Path, rate: int, text: str) -> array:
    """espeak-ng speech as 16-bit mono PCM at `rate`, padded to whole 20 ms packets."""
    audio.require_tool("espeak-ng")
    audio.require_tool("sox")
    workdir.mkdir(parents=True, exist_ok=True)
    wav = workdir / f"speech-{rate}.wav"
    raw = workdir / f"speech-{rate}.s16"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), text], check=True, capture_output=True)
    subprocess.run(["sox", "-q", str(wav), "-r", str(rate), "-c", "1", "-e", "signed", "-b", "16",
                    "-L", "-t", "raw", str(raw)], check=True, capture_output=True)
    samples = array("h")
    samples.frombytes(raw.read_bytes())
    if sys.byteorder == "big":
        samples.byteswap()
    per_packet = int(rate * PTIME_S)
    samples.extend([0] * (-len(samples) % per_packet))
    assert sum(1 for s in samples if abs(s) > 500) > len(samples) // 10, "espeak-ng produced near silence"
    return samples


def send_paced(dest: tuple[str, int], payloads: list[bytes], pt: int, clock_per_packet: int) -> None:
    """Sends one RTP packet per 20 ms against an absolute schedule."""
    rng = random.Random()
    ssrc, seq, ts = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for n, payload in enumerate(payloads):
            delay = start + n * PTIME_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(rtp_header(pt, seq + n, ts + n * clock_per_packet, ssrc, marker=n == 0) + payload, dest)


def record_call(airlock, offer_rtpmap: str, pt: int, labels: list[str], payloads: dict[str, list[bytes]],
                clock_per_packet: int) -> tuple[dict, audio.Wav]:
    """One SIPREC call offering only `offer_rtpmap` on every stream; returns (manifest, decrypted WAV)."""
    streams = [sip.OfferStream(label, 40000 + 2 * i, (pt,), rtpmaps={pt: offer_rtpmap})
               for i, label in enumerate(labels)]
    ctype, body = sip.multipart(sip.offer_sdp(streams), sip.metadata_xml(labels))
    uac = sip.SipUac(airlock.sip)
    try:
        answer, _ = uac.invite(body, ctype)
        media = sip.check_siprec_answer(answer, labels)
        for label in labels:
            assert media[label].payload_types == [pt], f"answer for {label}: {media[label]}"
        for label in labels:
            send_paced(("127.0.0.1", media[label].port), payloads[label], pt, clock_per_packet)
        time.sleep(0.3)
        assert uac.bye().status == 200
    finally:
        uac.close()
    [call_dir] = airlock.wait_calls(1)
    return airlock.manifest(call_dir), airlock.recording(call_dir)


def l16_packets(samples: array, rate: int) -> list[bytes]:
    big_endian = array("h", samples)
    if sys.byteorder == "little":
        big_endian.byteswap()
    raw = big_endian.tobytes()
    size = int(rate * PTIME_S) * 2
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def test_l16_8k_and_16k_are_recorded_sample_exact(airlock_factory, tmp_path):
    for rate in (8000, 16000):
        airlock = airlock_factory(name=f"airlock-l16-{rate}").start()
        source = speech_pcm(tmp_path / f"l16-{rate}", rate, "Account number verification complete")
        first, second = source[: len(source) // 2], source[len(source) // 2:]
        # Each stream carries a different half, so a channel mix-up cannot pass.
        halves = {"1": first[: len(first) - len(first) % int(rate * PTIME_S)],
                  "2": second[: len(second) - len(second) % int(rate * PTIME_S)]}
        manifest, wav = record_call(airlock, f"L16/{rate}", PT_L16, ["1", "2"],
                                    {label: l16_packets(pcm, rate) for label, pcm in halves.items()},
                                    int(rate * PTIME_S))
        assert wav.sample_rate == rate and wav.channels == 2, (wav.sample_rate, wav.channels)
        streams = stream_by_label(manifest)
        for label, pcm in halves.items():
            assert streams[label]["codec"] == "L16", streams[label]
            audio.assert_exact_run(wav.channel(streams[label]["channel"]), pcm, f"L16/{rate} label {label}")


def snr_db(reference: array, recorded: array, offset: int) -> float:
    signal = noise = 0.0
    for i, ref in enumerate(reference):
        got = recorded[offset + i] if 0 <= offset + i < len(recorded) else 0
        signal += ref * ref
        noise += (ref - got) * (ref - got)
    return 10 * math.log10(signal / max(noise, 1.0))


def first_loud(samples, threshold: int = 2000) -> int:
    return next(i for i, s in enumerate(samples) if abs(s) > threshold)


def test_g722_is_decoded_to_16khz(airlock, tmp_path):
    source = speech_pcm(tmp_path / "g722", 16000, "Please hold while I transfer your call")
    encoded = audio.g722_encode(source)
    packets = [encoded[i:i + 160] for i in range(0, len(encoded), 160)]
    manifest, wav = record_call(airlock, "G722/8000", PT_G722, ["1"], {"1": packets}, 160)
    assert wav.sample_rate == 16000, wav.sample_rate
    [stream] = manifest["streams"]
    assert stream["codec"] == "G722" and stream["packets_received"] == len(packets), stream
    channel = wav.channel(stream["channel"])
    # G.722's QMF filters delay the audio by a few dozen samples: align on the onset, then search nearby.
    base = first_loud(channel) - first_loud(source)
    coarse = max(range(base - 64, base + 65, 4), key=lambda off: snr_db(source[::16], channel[off::16], 0))
    best = max(range(coarse - 4, coarse + 5), key=lambda off: snr_db(source, channel, off))
    quality = snr_db(source, channel, best)
    print(f"G.722 SNR {quality:.1f} dB at offset {best}")
    assert quality >= 25.0, f"G.722 recording SNR {quality:.1f} dB against the source (offset {best})"
