"""Local capture from a sound card (`[capture]`) end to end, with a virtual ALSA device (harness/alsa.py: the
`file` plugin over `null`, fed through a FIFO in real time; no sound card or kernel module needed).

Covered: a two-channel tap (agent, customer) cut into a call by level — speech starts it, quiet ends it — whose
recording decrypts with age to exactly the audio fed on each channel (the spoken card number silenced), whose
transcript has the agent's words and the card number redacted, delivered by the outbox to the local uplink
with a manifest naming the source; a schedule cutting back-to-back calls on wall-clock multiples without losing
a sample; a device that is missing at start (alarm, metric, retries, no crash) and then appears; a device that
vanishes mid-call (a PulseAudio server killed under ALSA's pulse plugin): the call ends, is kept and delivered,
and the device is reopened when it is back; and a device name the hardware profile lacks refused by
`check-config`, naming the key and the device."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from array import array
from datetime import datetime
from pathlib import Path

import pytest

from harness import alsa, audio
from harness.airlock import airlock_binary
from harness import metrics
from test_redaction import CARD, digits_of
from test_transcription import (MAX_LEG_WER, assert_no_text_in_log, leg_text, published_transcript, reference,
                                sox_raw, transcription_on, wer)

RATE = 16000
PCM = "airlock_tap"


def pcm16(raw: bytes) -> array:
    samples = array("h")
    samples.frombytes(raw)
    return samples


def espeak16k(text: str, workdir: Path, stem: str) -> array:
    """`text` spoken by espeak-ng, as 16 kHz PCM."""
    wav = audio._espeak_wav(text, workdir, stem, "en", 150)
    raw = workdir / f"{stem}-16k.raw"
    subprocess.run(["sox", "-q", str(wav), "-r", str(RATE), "-c", "1", "-e", "signed-integer", "-b", "16", "-L",
                    "-t", "raw", str(raw)], check=True, capture_output=True)
    return pcm16(raw.read_bytes())


def silence(seconds: float) -> array:
    return array("h", bytes(2 * int(RATE * seconds)))


def loud_run_start(channels: list[array], begin: int, dbfs: float = -45.0, run_ms: int = 300) -> int:
    """Where the segmenter's loud run begins: the first of `run_ms` of 20 ms frames at or above `dbfs` on the louder
    channel, looking from `begin` (the default [capture] start_dbfs and start_ms)."""
    frame = RATE // 50

    def loud(at: int) -> bool:
        for channel in channels:
            chunk = channel[at:at + frame]
            power = sum(x * x for x in chunk) / max(len(chunk), 1)
            if power > 0 and 10 * math.log10(power / 32768 ** 2) >= dbfs:
                return True
        return False

    at = begin
    while not all(loud(at + k * frame) for k in range(run_ms // 20)):
        at += frame
    return at


def capture_config(segmentation: dict, **extra) -> dict:
    return {**transcription_on(), "capture": {"device": f"alsa:{PCM}", "roles": ["agent", "customer"],
                                              "rate_hz": RATE, **segmentation, **extra}}


def start_with_tap(airlock_factory, tmp_path, monkeypatch, config: dict, channels: list[array] | None):
    """An airlock whose HOME defines the virtual tap; the feeder starts writing `channels` when the device
    opens (None: no device defined yet)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    feeder = None
    if channels is not None:
        fifo = tmp_path / "tap.fifo"
        alsa.write_asoundrc(home, PCM, fifo)
        feeder = alsa.FifoFeeder(fifo, alsa.interleave(channels), RATE, len(channels))
        feeder.start()
    inst = airlock_factory(overrides=config).start()
    return inst, feeder


def metric(inst, name: str) -> float:
    return metrics.value(metrics.parse(inst.metrics_text()), name)


def wait_metric(inst, name: str, check, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = metric(inst, name)
        if check(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{name} is {value}\n{inst.log.read_text(errors='replace')[-3000:]}")


def test_level_segmented_call_is_recorded_transcribed_redacted_and_delivered(airlock_factory, tmp_path,
                                                                              monkeypatch):
    # The agent reads a passage (real speech, for the word error rate), then asks for the card; the customer
    # reads it. 1.5 s of quiet line first, 0.8 s between turns, then quiet: the call ends 2 s into it.
    reading = pcm16(sox_raw("0870", tmp_path, RATE, "signed-integer", 16))
    turn = silence(0.8)
    agent = reading + turn + espeak16k(
        "Thank you. Can I have the long card number on the front of your card, please?", tmp_path, "ask")
    customer = espeak16k("Sure. It is " + ", ".join(" ".join(CARD[i:i + 4]) for i in range(0, 16, 4)) + ".",
                         tmp_path, "card")
    lead = silence(1.5)
    agent_channel = lead + agent + turn + silence(len(customer) / RATE) + silence(6)
    customer_channel = lead + silence(len(agent) / RATE) + turn + customer + silence(6)
    inst, feeder = start_with_tap(airlock_factory, tmp_path, monkeypatch,
                                  capture_config({"segmentation": "level", "end_silence_secs": 2}),
                                  [agent_channel, customer_channel])
    # The feeder paces the device: stop airlock before it (an unfed `null` PCM runs as fast as it is read).
    try:
        [call] = inst.wait_calls(1, timeout=120)
        assert wait_metric(inst, 'airlock_capture_calls_total{reason="silence"}', lambda v: v == 1) == 1
        assert metric(inst, "airlock_capture_device_up") == 1
        assert metric(inst, "airlock_capture_dropped_frames_total") == 0
        assert inst.terminate() == 0
    finally:
        feeder.stop()
    manifest = inst.manifest(call)
    assert manifest["source"] == "local_capture", manifest
    assert manifest["end_reason"] == "streams_ended", manifest
    assert (manifest["sample_rate"], manifest["channel_count"]) == (RATE, 2), manifest
    assert [(s["label"], s["channel"]) for s in manifest["streams"]] == [("agent", 0), ("customer", 1)], manifest
    assert call.is_relative_to(inst.uplink / "local"), call
    started = [e for e in inst.events() if e.get("event") == "call_started" and e["call"] == call.name]
    assert started and started[0]["source"] == "local_capture", started

    # The recording: each channel is what was fed, sample-exact, except the silenced card digits.
    wav = inst.recording(call)
    assert (wav.sample_rate, wav.channels) == (RATE, 2)
    silenced = manifest["audio_redactions"]
    assert "CARD_NUMBER" in {s["kind"] for s in silenced}, silenced
    speech_start = len(lead)
    speech_end = len(lead) + len(agent) + len(turn) + len(customer)
    offsets = []
    for channel, fed in enumerate([agent_channel, customer_channel]):
        expected = fed[speech_start:speech_end]
        offsets.append(audio.assert_exact_but_silenced(
            wav.channel(channel), expected, [s for s in silenced if s["channel"] == channel], RATE,
            f"channel {channel}"))
    assert offsets[0] == offsets[1], f"the channels are not aligned: {offsets}"
    # Level start keeps the 0.5 s before the loud run began (pre-roll; the run is the first 300 ms of 20 ms frames
    # at or above -45 dBFS on the louder channel), and quiet ended the call ~2 s after it.
    run = loud_run_start([agent_channel, customer_channel], speech_start)
    expected_offset = speech_start - (run - RATE // 2)
    assert abs(offsets[0] - expected_offset) <= 2 * (RATE // 50), (offsets, expected_offset)
    tail = (len(wav.channel(0)) - offsets[0] - (speech_end - speech_start)) / RATE
    assert 1.5 <= tail <= 3.0, f"{tail:.2f} s of quiet after the speech"

    # The transcript: the agent's words, the card number redacted, the digits nowhere.
    transcript = published_transcript(inst, call)
    agent_text = leg_text(transcript, "agent")
    reading_text = next(s["text"] for s in transcript["segments"] if s["speaker"] == "agent")
    assert wer(reference("0870"), reading_text) <= MAX_LEG_WER, agent_text
    customer_text = leg_text(transcript, "customer")
    assert "[CARD_NUMBER]" in customer_text, customer_text
    for path in [call / "transcript.json", call / "transcript.vtt", inst.uplink / "events.jsonl"]:
        text = path.read_text()
        assert CARD[:7] not in digits_of(text) and CARD[:7] not in text.replace(" ", ""), path
    assert_no_text_in_log(inst, transcript)
    blocked = inst.data_dir / "blocked"
    assert not blocked.is_dir() or not any(blocked.iterdir()), "the last gate had to hold something back"


def test_schedule_cuts_back_to_back_calls_on_the_wall_clock(airlock_factory, tmp_path, monkeypatch):
    agent = pcm16(sox_raw("0870", tmp_path, RATE, "signed-integer", 16))
    fed = silence(0.5) + agent + silence(30)
    quiet = silence(len(fed) / RATE)
    config = capture_config({"segmentation": "schedule", "schedule_secs": 10})
    config["transcription"] = {"enabled": False}
    inst, feeder = start_with_tap(airlock_factory, tmp_path, monkeypatch, config, [fed, quiet])
    try:
        wait_metric(inst, 'airlock_capture_calls_total{reason="schedule"}', lambda v: v >= 2, timeout=40)
    finally:
        assert inst.terminate() == 0
        feeder.stop()
    calls = inst.wait_calls(3, timeout=20)
    manifests = [inst.manifest(call) for call in calls]
    assert all(m["source"] == "local_capture" for m in manifests)
    reasons = [m["end_reason"] for m in manifests]
    assert reasons.count("shutdown") == 1 and reasons[-1] == "shutdown", reasons
    # Each call lasts at most 10 s, and every call after the first starts where the wall clock passed a
    # multiple of 10 s (opened within a fraction of a second of it).
    recordings = [inst.recording(call).channel(0) for call in calls]
    for recording in recordings:
        assert len(recording) <= 10 * RATE + RATE // 10, len(recording)
    for manifest in manifests[1:]:
        started = datetime.fromisoformat(manifest["started_at"].replace("Z", "+00:00")).timestamp()
        assert min(started % 10, 10 - started % 10) < 0.5, manifest["started_at"]
    # Nothing is lost at the cuts: the calls put together hold the speech sample-exact.
    joined = array("h")
    for recording in recordings:
        joined.extend(recording)
    offset = audio.locate_run(joined, agent)
    assert offset >= 0, "the speech is not in the calls"
    assert joined[offset:offset + len(agent)] == agent, "the speech is not sample-exact across the cut"


def selftest_capture(inst) -> dict:
    out = subprocess.run([str(airlock_binary()), "selftest", "--json", "--config", str(inst.config_path)],
                         capture_output=True, text=True, timeout=60)
    [check] = [c for c in json.loads(out.stdout) if c["id"] == "capture.device"]
    return check


def test_a_missing_device_is_retried_without_a_crash_and_recorded_once_it_appears(airlock_factory, tmp_path,
                                                                                  monkeypatch):
    config = capture_config({"segmentation": "level", "end_silence_secs": 2})
    config["transcription"] = {"enabled": False}
    inst, _ = start_with_tap(airlock_factory, tmp_path, monkeypatch, config, None)
    feeder = None
    try:
        wait_metric(inst, 'airlock_alarm{alarm="capture_device"}', lambda v: v == 1)
        assert metric(inst, "airlock_capture_device_up") == 0
        failures = wait_metric(inst, "airlock_capture_device_failures_total", lambda v: v >= 2, timeout=15)
        assert inst.alive()
        log = inst.log.read_text(errors="replace")
        assert "cannot open the capture device" in log and PCM in log, log[-2000:]
        assert sum(1 for line in log.splitlines() if "cannot open the capture device" in line) == 1
        # The technician's selftest says so, from the running airlock's own account.
        assert selftest_capture(inst)["status"] == "fail"
        # The device appears (a tap plugged in): the next retry opens it and a call is recorded.
        fifo = tmp_path / "tap.fifo"
        alsa.write_asoundrc(tmp_path / "home", PCM, fifo)
        tone = array("h", [int(8000 * ((i // 20) % 2 * 2 - 1)) for i in range(RATE * 2)])
        feeder = alsa.FifoFeeder(fifo, alsa.interleave([silence(0.5) + tone, silence(0.5) + tone]), RATE, 2)
        feeder.start()
        wait_metric(inst, "airlock_capture_device_up", lambda v: v == 1, timeout=45)
        wait_metric(inst, 'airlock_alarm{alarm="capture_device"}', lambda v: v == 0)
        check = selftest_capture(inst)
        assert check["status"] == "ok" and "device open" in check["detail"], check
        [call] = inst.wait_calls(1, timeout=30)
        assert inst.manifest(call)["source"] == "local_capture"
        alarms = [e for e in inst.events() if e.get("alarm") == "capture_device"]
        assert [e["state"] for e in alarms] == ["raised", "cleared"], alarms
        assert inst.terminate() == 0
    finally:
        if feeder is not None:
            feeder.stop()


def test_a_device_that_stops_delivering_without_an_error_is_reopened(airlock_factory, tmp_path, monkeypatch):
    """The tap's feeder holds back (the FIFO stays open, the `file` PCM blocks: a hung interface reports no
    error): after 2 s without audio the call in progress ends and is kept, and the device is reopened."""
    config = capture_config({"segmentation": "level", "end_silence_secs": 5})
    config["transcription"] = {"enabled": False}
    tone = array("h", [int(8000 * ((i // 20) % 2 * 2 - 1)) for i in range(RATE * 30)])
    inst, feeder = start_with_tap(airlock_factory, tmp_path, monkeypatch, config, [tone, tone])
    try:
        wait_metric(inst, "airlock_active_calls", lambda v: v == 1)
        time.sleep(2)
        feeder.hold(5)
        [call] = inst.wait_calls(1, timeout=30)
        manifest = inst.manifest(call)
        assert manifest["end_reason"] == "stream_lost", manifest
        assert metric(inst, "airlock_capture_device_failures_total") >= 1
        log = inst.log.read_text(errors="replace")
        assert "no audio for 2 s" in log, log[-2000:]
        # The feeder goes on: the device is open again and a new call records.
        wait_metric(inst, "airlock_capture_device_up", lambda v: v == 1, timeout=45)
        wait_metric(inst, 'airlock_alarm{alarm="capture_device"}', lambda v: v == 0)
        wait_metric(inst, "airlock_active_calls", lambda v: v == 1, timeout=30)
        assert inst.alive()
        assert inst.terminate() == 0
    finally:
        feeder.stop()


def test_a_device_vanishing_mid_call_ends_the_call_which_is_kept_and_the_device_is_reopened(
        airlock_factory, registry, tmp_path, monkeypatch):
    """The tap is a PulseAudio sink monitor; the server is killed while a call is being recorded (as a USB
    interface being unplugged), then started again."""
    for tool in ("pulseaudio", "pacat", "pactl"):
        audio.require_tool(tool)
    assert Path(f"/usr/lib/{os.uname().machine}-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so").is_file(), \
        "libasound2-plugins (ALSA's pulse plugin) is missing: run ci/setup"
    tap = alsa.PulseTap(tmp_path / "pulse", registry, RATE, 2)
    (tmp_path / "pulse").mkdir()
    tap.start()
    home = tmp_path / "home"
    tap.write_asoundrc(home, PCM)
    monkeypatch.setenv("HOME", str(home))
    config = capture_config({"segmentation": "level", "end_silence_secs": 2})
    config["transcription"] = {"enabled": False}
    inst = airlock_factory(overrides=config).start()
    wait_metric(inst, "airlock_capture_device_up", lambda v: v == 1)
    reading = pcm16(sox_raw("0870", tmp_path, RATE, "signed-integer", 16))
    raw = tmp_path / "reading-stereo.raw"
    raw.write_bytes(alsa.interleave([reading, reading]))
    tap.play(raw)
    wait_metric(inst, "airlock_active_calls", lambda v: v == 1)
    time.sleep(3)
    tap.kill()
    [call] = inst.wait_calls(1, timeout=30)
    manifest = inst.manifest(call)
    assert (manifest["source"], manifest["end_reason"]) == ("local_capture", "stream_lost"), manifest
    # What was recorded before the device vanished is kept: seconds of the reading, on both channels.
    wav = inst.recording(call)
    for channel in range(2):
        voiced = sum(1 for s in wav.channel(channel) if abs(s) > 500)
        assert voiced > RATE, f"channel {channel}: {voiced} voiced samples"
    assert metric(inst, 'airlock_capture_calls_total{reason="interrupted"}') == 1
    assert metric(inst, 'airlock_alarm{alarm="capture_device"}') == 1
    assert metric(inst, "airlock_capture_device_up") == 0
    log = inst.log.read_text(errors="replace")
    assert "capture device failed; reopening it" in log, log[-2000:]
    assert inst.alive()
    # Plugged in again: reopened with backoff, the alarm clears.
    tap.start()
    wait_metric(inst, "airlock_capture_device_up", lambda v: v == 1, timeout=45)
    wait_metric(inst, 'airlock_alarm{alarm="capture_device"}', lambda v: v == 0)
    assert inst.terminate() == 0


def test_check_config_names_an_unknown_capture_device(tmp_path):
    profile = Path(__file__).resolve().parents[2] / "hw" / "x86_64-rack.toml"
    text = profile.read_text() + ('\n[[audio]]\nname = "tap"\ncard = "Device"\ndevice = 0\ndirection = "capture"\n'
                                  'channels = 2\nrate_hz = 48000\n')
    (tmp_path / "hw.toml").write_text(text)
    for device, expect in [("line2", ["capture.device", "line2", "tap"]), ("tap", None)]:
        (tmp_path / "airlock.toml").write_text(
            f'[hardware]\nprofile = "{tmp_path / "hw.toml"}"\n[capture]\ndevice = "{device}"\n'
            f'[transcription]\nenabled = false\n')
        proc = subprocess.run([str(airlock_binary()), "check-config", str(tmp_path / "airlock.toml")],
                              capture_output=True, text=True, timeout=30)
        if expect is None:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == 2, (proc.returncode, proc.stderr)
            assert all(word in proc.stderr for word in expect), proc.stderr
    (tmp_path / "airlock.toml").write_text('[capture]\ndevice = "alsa:tap"\nroles = ["caller"]\n')
    proc = subprocess.run([str(airlock_binary()), "check-config", str(tmp_path / "airlock.toml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "capture.roles" in proc.stderr, proc.stderr


pytestmark = pytest.mark.skipif(not Path("/usr/share/alsa/alsa.conf").is_file(), reason="ALSA config missing")
