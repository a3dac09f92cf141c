"""On-device transcription end to end: real human speech (LibriVox readings shipped with reference transcripts in
Debian's pocketsphinx-testdata) is sent as call audio; the published call must carry a transcript whose text per
speaker matches the reference, WebVTT beside it, segment events in the event log, and no text in the log.

Covered: SIPREC from our Python UAC and from SIPp, a G.722 (16 kHz) leg beside a G.711 leg, VoiceStream legs at
16 and 8 kHz, silence/noise/tone that must give no transcript at all, overload that must shed segments (counted,
listed as gaps) without touching the recordings, and start-up refused for a missing or corrupt model.

Needs the models that `ci/install-asr` installs in <repo>/airlock-data/models."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import subprocess
import sys
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import audio, g711, metrics, procs, sip
from harness.airlock import ROOT, Airlock, check_manifest, stream_by_label, to_toml
from harness.calls import SiprecCall
from harness.rtp import RtpSender, SendReport
from harness.sipp import SippSiprecSrc
from harness.voicestream import LegClient, LegConfig

MODELS = ROOT / "airlock-data" / "models"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
# WER over one utterance per leg, after lower-casing and stripping punctuation. tiny.en through G.711 measured
# 0–10 % on these readings (docs/BENCHMARKS.md §7); the bound leaves room for a word or two more.
MAX_LEG_WER = 0.25
TRAILING_SILENCE_S = 0.6  # after each utterance, so the VAD ends the segment before the call does
PT_G722 = 9


# --- audio ------------------------------------------------------------------------------------------------------
def transcription_on(**extra) -> dict:
    assert (MODELS / "ggml-tiny.en-q8_0.bin").is_file(), "run ci/install-asr first"
    return {"transcription": {"enabled": True, "models_dir": str(MODELS), **extra}}


def librivox(utterance: str) -> Path:
    """One reading, e.g. "0870" (16 kHz mono WAV)."""
    return LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{utterance}.wav"


def reference(utterance: str) -> str:
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if line.endswith(f"-{utterance})"):
            return re.sub(r"</?s>|\(.*\)", "", line).strip()
    raise KeyError(utterance)


def sox_raw(utterance: str, workdir: Path, rate: int, encoding: str, bits: int) -> bytes:
    raw = workdir / f"{utterance}-{rate}-{encoding}.raw"
    subprocess.run(["sox", "-q", str(librivox(utterance)), "-r", str(rate), "-c", "1", "-e", encoding,
                    "-b", str(bits), "-L", "-t", "raw", str(raw)], check=True, capture_output=True)
    return raw.read_bytes()


def pcmu_of(utterance: str, workdir: Path) -> bytes:
    """The reading as 8 kHz µ-law, whole 20 ms packets, with trailing silence."""
    data = sox_raw(utterance, workdir, 8000, "mu-law", 8)
    data += bytes([g711.silence_byte("PCMU")]) * int(8000 * TRAILING_SILENCE_S)
    return data + bytes([g711.silence_byte("PCMU")]) * (-len(data) % 160)


def pcm_of(utterance: str, workdir: Path, rate: int) -> array:
    """The reading as 16-bit PCM at `rate`, whole 20 ms, with trailing silence."""
    samples = array("h")
    samples.frombytes(sox_raw(utterance, workdir, rate, "signed-integer", 16))
    if sys.byteorder == "big":
        samples.byteswap()
    samples.extend([0] * int(rate * TRAILING_SILENCE_S))
    samples.extend([0] * (-len(samples) % (rate // 50)))
    return samples


def send_all(senders: dict[str, RtpSender]) -> dict[str, SendReport]:
    """Streams every sender at once in real time; their reports by label."""
    for sender in senders.values():
        sender.start()
    try:
        return {label: s.join(s.slots() * 0.02 + 10) for label, s in senders.items()}
    finally:
        for sender in senders.values():
            sender.close()


def send_siprec(airlock: Airlock, payloads: dict[str, bytes]) -> dict[str, SendReport]:
    """One SIPREC call from the Python UAC: a labelled PCMU stream per payload, then BYE."""
    call = SiprecCall(airlock.sip, list(payloads)).start()
    try:
        reports = send_all({label: call.sender(label, data) for label, data in payloads.items()})
        assert call.bye().status == 200
    finally:
        call.close()
    return reports


def assert_recorded_exactly(airlock: Airlock, call: Path, reports: dict[str, SendReport]) -> dict:
    """Every PCMU leg is in its channel sample-exactly, with every packet counted. Returns the manifest."""
    manifest = airlock.manifest(call)
    check_manifest(airlock, call, manifest)
    streams = stream_by_label(manifest)
    wav = airlock.recording(call)
    for label, report in reports.items():
        assert streams[label]["packets_received"] == report.packets, (label, streams[label], report.packets)
        audio.assert_exact_run(wav.channel(streams[label]["channel"]), report.expected_samples("PCMU"),
                               f"{call.name} {label}")
    return manifest


# --- transcripts ------------------------------------------------------------------------------------------------
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


def published_transcript(airlock: Airlock, call: Path) -> dict:
    """The call's transcript.json, after checking it against the manifest's report and transcript.vtt."""
    manifest = airlock.manifest(call)
    raw = (call / "transcript.json").read_bytes()
    transcript = json.loads(raw)
    assert transcript["format"] == "airlock.transcript.v1" and transcript["call"] == call.name, transcript
    report = manifest["transcript"]
    assert report["sha256"] == hashlib.sha256(raw).hexdigest(), report
    assert (report["segments"], report["gaps"], report["complete"]) == \
        (len(transcript["segments"]), len(transcript["gaps"]), transcript["complete"]), report
    assert report["redaction_policy"] == transcript["redaction_policy"] == "airlock-pii-2", report
    vtt = (call / "transcript.vtt").read_bytes()
    assert report["vtt_sha256"] == hashlib.sha256(vtt).hexdigest(), report
    cues = re.findall(r"^<v ([^>]+)>", vtt.decode(), re.M)
    assert vtt.startswith(b"WEBVTT\n") and cues == [s["speaker"] for s in transcript["segments"]], vtt
    for segment in transcript["segments"]:
        assert 0 <= segment["start_ms"] < segment["end_ms"], segment
        assert segment["words"], segment
        assert all(segment["start_ms"] <= w["start_ms"] <= w["end_ms"] <= segment["end_ms"]
                   for w in segment["words"]), segment
    return transcript


def assert_said(transcript: dict, said: dict[str, str]) -> dict[str, float]:
    """Each speaker's text is within MAX_LEG_WER of the reference of the utterance it was sent. Returns the WERs."""
    assert sorted(leg["speaker"] for leg in transcript["legs"]) == sorted(said), transcript["legs"]
    scores = {}
    for speaker, utterance in said.items():
        text = leg_text(transcript, speaker)
        scores[speaker] = wer(reference(utterance), text)
        assert scores[speaker] <= MAX_LEG_WER, (speaker, utterance, scores[speaker], text)
    print("WER per leg:", {speaker: round(score, 3) for speaker, score in scores.items()})
    return scores


def segment_events(airlock: Airlock, call: Path | None = None) -> list[dict]:
    return [e for e in airlock.events() if e.get("event") == "transcript_segment"
            and (call is None or e["call"] == call.name)]


def assert_no_text_in_log(airlock: Airlock, transcript: dict) -> None:
    log = airlock.log.read_text(errors="replace").lower()
    for segment in transcript["segments"]:
        for word in words(segment["text"]):
            if len(word) > 6:
                assert word not in log, word


# --- calls with speech ------------------------------------------------------------------------------------------
def test_siprec_call_is_transcribed_per_speaker(airlock_factory, tmp_path):
    airlock = airlock_factory(overrides=transcription_on()).start()
    said = {"agent": "0870", "customer": "0920"}
    reports = send_siprec(airlock, {speaker: pcmu_of(utterance, tmp_path) for speaker, utterance in said.items()})

    [call] = airlock.wait_calls(1, timeout=60)
    assert_recorded_exactly(airlock, call, reports)
    transcript = published_transcript(airlock, call)
    assert transcript["complete"] is True and transcript["gaps"] == []
    assert_said(transcript, said)
    assert all(s["end_ms"] <= 20_000 for s in transcript["segments"]), transcript["segments"]

    events = segment_events(airlock)
    assert {e["segment"]["speaker"] for e in events} == {"agent", "customer"}
    assert all(e["call"] == call.name for e in events)
    # Transcript text never reaches the log.
    assert_no_text_in_log(airlock, transcript)


def test_sipp_siprec_call_is_transcribed_per_stream_label(airlock_factory, registry, tmp_path):
    """SIPp is the SRC (tests/sipp/siprec_src_two_streams.xml: label 2's m-line first); each answered port gets
    a different reading. The speaker of each text is the label of the stream it came in on."""
    airlock = airlock_factory(overrides=transcription_on()).start()
    said = {"1": "0890", "2": "0870"}
    payloads = {label: pcmu_of(utterance, tmp_path) for label, utterance in said.items()}
    sipp = SippSiprecSrc(registry, airlock.sip_port, tmp_path / "sipp",
                         call_ms=max(len(p) for p in payloads.values()) // 8 + 1500)
    ports = sipp.ports()
    reports = send_all({label: RtpSender(("127.0.0.1", ports[label]), data, g711.PT_PCMU)
                        for label, data in payloads.items()})
    sipp.wait()

    [call] = airlock.wait_calls(1, timeout=60)
    streams = stream_by_label(assert_recorded_exactly(airlock, call, reports))
    transcript = published_transcript(airlock, call)
    assert transcript["complete"] is True and transcript["gaps"] == []
    assert {leg["speaker"]: leg["channel"] for leg in transcript["legs"]} == \
        {label: streams[label]["channel"] for label in said}, (transcript["legs"], streams)
    assert_said(transcript, said)
    events = segment_events(airlock, call)
    assert len(events) == len(transcript["segments"])
    assert sorted((e["segment"]["speaker"], e["segment"]["text"]) for e in events) == \
        sorted((s["speaker"], s["text"]) for s in transcript["segments"])
    assert_no_text_in_log(airlock, transcript)


def test_g722_leg_is_transcribed_beside_a_g711_leg(airlock_factory, tmp_path):
    """The agent's stream is offered and sent only as G.722 (16 kHz audio), the customer's only as PCMU."""
    airlock = airlock_factory(overrides=transcription_on()).start()
    said = {"agent": "0920", "customer": "0870"}
    offer = [sip.OfferStream("agent", 40000, (PT_G722,), rtpmaps={PT_G722: "G722/8000"}),
             sip.OfferStream("customer", 40002, (g711.PT_PCMU,), rtpmaps={g711.PT_PCMU: "PCMU/8000"})]
    ctype, body = sip.multipart(sip.offer_sdp(offer), sip.metadata_xml(list(said)))
    uac = sip.SipUac(airlock.sip)
    try:
        answer, _ = uac.invite(body, ctype)
        media = sip.check_siprec_answer(answer, list(said))
        assert media["agent"].payload_types == [PT_G722] and media["customer"].payload_types == [g711.PT_PCMU], \
            media
        # G.722 is 64 kbit/s on an 8 kHz RTP clock: 160 bytes and 160 clock ticks per 20 ms, like PCMU.
        g722 = audio.g722_encode(pcm_of(said["agent"], tmp_path, 16000))
        reports = send_all({
            "agent": RtpSender(("127.0.0.1", media["agent"].port), g722, PT_G722),
            "customer": RtpSender(("127.0.0.1", media["customer"].port), pcmu_of(said["customer"], tmp_path),
                                  g711.PT_PCMU)})
        assert uac.bye().status == 200
    finally:
        uac.close()

    [call] = airlock.wait_calls(1, timeout=60)
    manifest = airlock.manifest(call)
    check_manifest(airlock, call, manifest)
    streams = stream_by_label(manifest)
    assert (streams["agent"]["codec"], streams["customer"]["codec"]) == ("G722", "PCMU"), streams
    for label, report in reports.items():
        assert streams[label]["packets_received"] == report.packets, (label, streams[label])
    wav = airlock.recording(call)
    assert wav.sample_rate == 16000, "a G.722 leg makes the recording wideband"
    for label in said:
        channel = wav.channel(streams[label]["channel"])
        assert sum(1 for s in channel if abs(s) > 1000) > wav.sample_rate, f"{label}'s channel is near silence"

    transcript = published_transcript(airlock, call)
    assert transcript["complete"] is True and transcript["gaps"] == []
    assert_said(transcript, said)
    assert {e["segment"]["speaker"] for e in segment_events(airlock, call)} == set(said)


def test_voicestream_agent_and_customer_are_transcribed(airlock_factory, vs_stubs, tmp_path):
    """Five9 VoiceStream: the agent leg streams LINEAR16 at 16 kHz, the customer's at 8 kHz, one vcc_call_id."""
    port = procs.free_port(tcp_and_udp=False)
    airlock = airlock_factory(overrides={
        **transcription_on(),
        "voicestream": {"listen": f"127.0.0.1:{port}", "insecure_plaintext": True, "leg_linger_secs": 1},
        "voicestream.trust_tokens": {"sub-1": ["token-1"]}}).start()
    procs.wait_tcp(port, 10, airlock.proc)
    call_id = str(random.randrange(300000000000000, 399999999999999))
    said = {"agent": "0870", "customer": "0920"}
    rates = {"agent": 16000, "customer": 8000}
    legs = [LegClient(f"127.0.0.1:{port}", LegConfig(call_id, leg, sample_rate_hertz=rates[leg]),
                      pcm_of(utterance, tmp_path, rates[leg]), chunk_bytes=rates[leg] // 5)  # 100 ms chunks
            for leg, utterance in said.items()]
    # A VoiceStream call is recorded at the rate of its first leg: the customer's (8 kHz) goes first.
    customer, agent = legs[1], legs[0]
    customer.start()
    deadline = time.monotonic() + 10
    while not customer.responses():
        assert time.monotonic() < deadline and customer.is_alive(), "the customer leg was not answered"
        time.sleep(0.01)
    agent.start()
    reports = {leg.config.call_leg: leg.join(30) for leg in legs}
    for report in reports.values():
        assert report.error is None and report.grpc_code.name == "OK", report.describe()

    [call] = airlock.wait_calls(1, timeout=60)
    manifest = airlock.manifest(call)
    assert manifest["source"] == "voicestream" and manifest["recording"]["sample_rate"] == 8000, manifest
    streams = stream_by_label(manifest)
    assert (streams["agent"]["codec"], streams["customer"]["codec"]) == ("L16/16000", "L16/8000"), streams
    # The 8 kHz customer leg is recorded as sent (the 16 kHz agent leg is resampled to the 8 kHz recording).
    wav = airlock.recording(call)
    audio.assert_exact_run(wav.channel(streams["customer"]["channel"]), reports["customer"].sent, "customer")

    transcript = published_transcript(airlock, call)
    assert transcript["complete"] is True and transcript["gaps"] == []
    assert {leg["speaker"]: leg["channel"] for leg in transcript["legs"]} == {"agent": 0, "customer": 1}
    assert_said(transcript, said)
    assert {e["segment"]["speaker"] for e in segment_events(airlock, call)} == {"agent", "customer"}
    assert_no_text_in_log(airlock, transcript)


# --- no speech, too much speech ---------------------------------------------------------------------------------
def test_silence_noise_and_tone_give_an_empty_transcript(airlock_factory, tmp_path):
    """8 s of digital silence, of white noise (±3000) and of a 1 kHz tone, each on its own leg: no segment, no
    segment event, and every leg recorded sample-exactly."""
    airlock = airlock_factory(overrides=transcription_on()).start()
    n = 8 * 8000
    rng = random.Random(7)
    payloads = {
        "silence": bytes([g711.silence_byte("PCMU")]) * n,
        "noise": g711.encode([rng.randint(-3000, 3000) for _ in range(n)], "PCMU"),
        "tone": g711.encode([round(8000 * math.sin(2 * math.pi * 1000 * i / 8000)) for i in range(n)], "PCMU"),
    }
    reports = send_siprec(airlock, payloads)

    [call] = airlock.wait_calls(1, timeout=60)
    assert_recorded_exactly(airlock, call, reports)
    transcript = published_transcript(airlock, call)
    assert sorted(leg["speaker"] for leg in transcript["legs"]) == sorted(payloads)
    assert transcript["segments"] == [] and transcript["gaps"] == [] and transcript["complete"] is True, transcript
    assert (call / "transcript.vtt").read_text() == "WEBVTT\n"
    assert segment_events(airlock) == []
    counted = {k: v for k, v in metrics.parse(airlock.metrics_text()).items()
               if k.startswith("airlock_transcription_segments_total")}
    print("segments by result:", counted)
    assert metrics.value(counted, "airlock_transcription_segments_total") == counted.get(
        'airlock_transcription_segments_total{result="no_speech"}', 0), "the VAD's finds must all be no_speech"


def test_overload_sheds_segments_but_never_audio(airlock_factory, tmp_path):
    """One whisper worker, one queue slot and short segments against four calls with speech on both legs: the
    engine must drop segments (counted, and listed as gaps in the transcripts), while every call is published
    with its transcript and its recording: sample-exact except where audio went unchecked — each gap's audio
    is silenced and listed UNVERIFIED (audio redaction fails closed), never kept and never lost otherwise."""
    airlock = airlock_factory(overrides=transcription_on(workers=1, job_queue=1, hangover_ms=100,
                                                         max_segment_secs=2)).start()
    readings = ["0870", "0920", "0890", "0930", "0880"]

    def marked(reading: str, hz: int) -> bytes:
        """The reading after half a second of a steady tone (not speech to the VAD, so never silenced): where
        every segment of a leg was dropped, the tone still anchors the leg's audio in its channel."""
        tone = [int(3000 * math.sin(2 * math.pi * hz * n / 8000)) for n in range(4000)]
        return g711.encode(tone, "PCMU") + pcmu_of(reading, tmp_path)

    calls = [{"agent": marked(readings[i % 5], 400 + 100 * i), "customer": marked(readings[(i + 2) % 5], 700 + 100 * i)}
             for i in range(4)]
    with ThreadPoolExecutor(len(calls)) as pool:
        sent = list(pool.map(lambda payloads: send_siprec(airlock, payloads), calls))

    published = airlock.wait_calls(len(calls), timeout=60)
    assert len(published) == len(calls), published
    samples = metrics.parse(airlock.metrics_text())
    # Each call's recording holds exactly what one of the senders sent (calls are matched by their audio).
    unmatched = list(sent)
    gaps = []
    for call in published:
        wav = airlock.recording(call)
        streams = stream_by_label(airlock.manifest(call))
        match = next(reports for reports in unmatched
                     if audio.locate_run(wav.channel(streams["agent"]["channel"]),
                                         reports["agent"].expected_samples("PCMU")) >= 0)
        unmatched.remove(match)
        manifest = airlock.manifest(call)
        check_manifest(airlock, call, manifest)
        transcript = published_transcript(airlock, call)
        assert transcript["complete"] is True, transcript
        channels = {leg["leg"]: leg["channel"] for leg in transcript["legs"]}
        unverified = [s for s in manifest["audio_redactions"] if s["kind"] == "UNVERIFIED"]
        for gap in transcript["gaps"]:
            assert gap["reason"] == "segment_dropped" and 0 <= gap["start_ms"] < gap["end_ms"], gap
            assert gap["leg"] in channels, gap
            assert any(s["channel"] == channels[gap["leg"]] and s["start_ms"] <= gap["start_ms"]
                       and gap["end_ms"] <= s["end_ms"] for s in unverified), (gap, unverified)
        assert {s["kind"] for s in manifest["audio_redactions"]} <= {"UNVERIFIED"}, manifest["audio_redactions"]
        for label, report in match.items():
            channel = streams[label]["channel"]
            assert streams[label]["packets_received"] == report.packets, streams[label]
            audio.assert_exact_but_silenced(wav.channel(channel), report.expected_samples("PCMU"),
                                            [s for s in unverified if s["channel"] == channel], 8000, label)
        gaps += transcript["gaps"]

    dropped = metrics.value(samples, 'airlock_transcription_segments_total{result="dropped"}')
    print(f"{len(gaps)} segments dropped; segments by result:",
          {k: v for k, v in samples.items() if k.startswith("airlock_transcription_segments_total")})
    assert dropped > 0, "one worker and one queue slot kept up with eight speaking legs?"
    assert len(gaps) == dropped, "every dropped segment is a gap in its call's transcript"
    assert samples['airlock_audio_silenced_seconds_total{reason="unverified"}'] > 0
    assert samples['airlock_transcription_state{state="shedding"}'] == 1, "drops in the last 30 s mean `shedding`"
    assert samples['airlock_transcription_state{state="ok"}'] == 0


# --- start-up ---------------------------------------------------------------------------------------------------
def models_dir(path: Path, cut: dict[str, int | None]) -> Path:
    """A models directory like MODELS whose files named in `cut` hold only their first N bytes (None: absent)."""
    path.mkdir()
    for entry in MODELS.iterdir():
        if entry.name not in cut:
            (path / entry.name).symlink_to(entry)
        elif cut[entry.name] is not None:
            with entry.open("rb") as whole:
                (path / entry.name).write_bytes(whole.read(cut[entry.name]))
    return path


def test_missing_or_corrupt_model_stops_start_up(airlock_factory, tmp_path):
    """`run` and `check-config` exit 2 naming the key, without a panic, when the whisper model is missing (and
    say how to install it), cut to its first 1 MB, or when the VAD model is corrupt (cut to 100 kB; found by
    loading it, which check-config does too)."""
    cases = [
        ("missing", {"ggml-tiny.en-q8_0.bin": None}, ["transcription.model", "ci/install-asr"], True),
        ("truncated", {"ggml-tiny.en-q8_0.bin": 1 << 20}, ["transcription.model", "not a usable whisper model"],
         True),
        ("bad-vad", {"silero_vad.onnx": 100_000}, ["transcription.vad_model", "could not be loaded"], True),
    ]
    for name, cut, expected, check_config_sees_it in cases:
        models = models_dir(tmp_path / f"models-{name}", cut)
        inst = airlock_factory(name=name, overrides=transcription_on(models_dir=str(models)))
        inst.config_path.write_text(to_toml(inst.config))
        commands = [["run", "--config", str(inst.config_path)]]
        if check_config_sees_it:
            commands.append(["check-config", str(inst.config_path)])
        for argv in commands:
            proc = subprocess.run([str(inst.bin), *argv], capture_output=True, text=True, timeout=30,
                                  env={"RUST_BACKTRACE": "1", "PATH": "/usr/bin:/bin"})
            what = f"airlock {argv[0]} with the model {name}: exit {proc.returncode}, stderr {proc.stderr!r}"
            assert proc.returncode == 2, what
            assert all(text in proc.stderr for text in expected), what
            assert "panicked" not in proc.stderr, what
