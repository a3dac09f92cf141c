"""On-device transcription end to end: real human speech (LibriVox readings shipped with reference transcripts in
Debian's pocketsphinx-testdata) is sent as call audio; the published call must carry a transcript whose text per
speaker matches the reference, WebVTT beside it, segment events in the event log, and no text in the log.

Needs the models that `ci/install-asr` installs in <repo>/airlock-data/models."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from harness import audio, g711
from harness.airlock import ROOT, check_manifest, stream_by_label
from harness.calls import SiprecCall

MODELS = ROOT / "airlock-data" / "models"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
# WER over one utterance per leg, after lower-casing and stripping punctuation. tiny.en through G.711 measured
# 0–10 % on these readings (docs/BENCHMARKS.md §7); the bound leaves room for a word or two more.
MAX_LEG_WER = 0.25


def transcription_on(**extra) -> dict:
    assert (MODELS / "ggml-tiny.en-q8_0.bin").is_file(), "run ci/install-asr first"
    return {"transcription": {"enabled": True, "models_dir": str(MODELS), **extra}}


def reference(utterance: str) -> str:
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if line.endswith(f"-{utterance})"):
            return re.sub(r"</?s>|\(.*\)", "", line).strip()
    raise KeyError(utterance)


def pcmu_of(wav: Path, workdir: Path) -> bytes:
    """The file as 8 kHz µ-law, whole 20 ms packets, with 0.6 s of silence after (so the VAD ends it)."""
    raw = workdir / (wav.stem + ".ulaw")
    subprocess.run(["sox", "-q", str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8", "-t", "raw",
                    str(raw)], check=True, capture_output=True)
    data = raw.read_bytes() + bytes([g711.silence_byte("PCMU")]) * 4800
    return data + bytes([g711.silence_byte("PCMU")]) * (-len(data) % 160)


def words(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    return re.sub(r"[^a-z0-9' ]", " ", text).split()


def wer(ref: str, hyp: str) -> float:
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[len(h)] / max(len(r), 1)


def leg_text(transcript: dict, speaker: str) -> str:
    return " ".join(s["text"] for s in transcript["segments"] if s["speaker"] == speaker)


def send_siprec(airlock, payloads: dict[str, bytes]) -> dict[str, object]:
    call = SiprecCall(airlock.sip, list(payloads)).start()
    try:
        senders = {label: call.sender(label, data) for label, data in payloads.items()}
        for sender in senders.values():
            sender.start()
        reports = {label: s.join(len(payloads[label]) / 8000 + 10) for label, s in senders.items()}
        call.bye()
    finally:
        call.close()
    return reports


def test_siprec_call_is_transcribed_per_speaker(airlock_factory, tmp_path):
    airlock = airlock_factory(overrides=transcription_on()).start()
    payloads = {"agent": pcmu_of(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav", tmp_path),
                "customer": pcmu_of(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0920.wav", tmp_path)}
    reports = send_siprec(airlock, payloads)

    [call] = airlock.wait_calls(1, timeout=60)
    manifest = airlock.manifest(call)
    check_manifest(airlock, call, manifest)
    streams = stream_by_label(manifest)
    wav = airlock.recording(call)
    for label, report in reports.items():
        audio.assert_exact_run(wav.channel(streams[label]["channel"]), report.expected_samples("PCMU"), label)

    transcript = json.loads((call / "transcript.json").read_text())
    assert transcript["format"] == "airlock.transcript.v1"
    assert transcript["complete"] is True and transcript["gaps"] == []
    assert {leg["speaker"] for leg in transcript["legs"]} == {"agent", "customer"}
    for speaker, utterance in (("agent", "0870"), ("customer", "0920")):
        text = leg_text(transcript, speaker)
        score = wer(reference(utterance), text)
        assert score <= MAX_LEG_WER, (speaker, score, text)
    for segment in transcript["segments"]:
        assert 0 <= segment["start_ms"] < segment["end_ms"] <= 20_000, segment
        assert segment["words"], segment
        assert all(segment["start_ms"] <= w["start_ms"] <= w["end_ms"] <= segment["end_ms"]
                   for w in segment["words"]), segment

    report = manifest["transcript"]
    assert report["sha256"] == __import__("hashlib").sha256((call / "transcript.json").read_bytes()).hexdigest()
    assert report["segments"] == len(transcript["segments"]) and report["complete"]
    assert report["redaction_policy"] == "none"
    vtt = (call / "transcript.vtt").read_text()
    assert vtt.startswith("WEBVTT\n") and "<v agent>" in vtt and "<v customer>" in vtt

    events = [e for e in airlock.events() if e.get("event") == "transcript_segment"]
    assert {e["segment"]["speaker"] for e in events} == {"agent", "customer"}
    assert all(e["call"] == call.name for e in events)
    # Transcript text never reaches the log.
    log = airlock.log.read_text(errors="replace").lower()
    for segment in transcript["segments"]:
        for word in words(segment["text"]):
            if len(word) > 6:
                assert word not in log, word
