"""DTMF never leaves: a SIPREC call where the customer keys a card number as in-band tones (mixed into their
speech) and the agent's leg carries another card number as RFC 4733 telephone-events. The recording has the
tones silenced (guard included) and every other sample exactly as sent; the manifest lists the silenced spans
(dtmf, and card_number for the keyed cards) and counts the events but holds no key; neither card number
appears in the log, the manifest or the events."""

from __future__ import annotations

import math
import re
import time

from harness import audio, g711, sip
from harness.airlock import stream_by_label
from harness.rtp import Dtmf, RtpSender

# Two Luhn-valid test card numbers.
TONE_CARD = "4539578763621486"
EVENT_CARD = "5555555555554444"
ROWS = {"1": 697, "2": 697, "3": 697, "4": 770, "5": 770, "6": 770, "7": 852, "8": 852, "9": 852, "0": 941}
COLUMNS = {"1": 1209, "2": 1336, "3": 1477, "4": 1209, "5": 1336, "6": 1477, "7": 1209, "8": 1336, "9": 1477,
           "0": 1336}
RATE = 8000
TONE_MS, PAUSE_MS = 80, 120
GUARD = 20 * RATE // 1000


def dtmf_tone(digit: str, samples: int) -> list[int]:
    """A DTMF pair at about -10 dBm0 per tone."""
    amplitude = 2400
    return [int(amplitude * (math.sin(2 * math.pi * ROWS[digit] * n / RATE)
                             + math.sin(2 * math.pi * COLUMNS[digit] * n / RATE))) for n in range(samples)]


def keyed_speech(speech: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """The customer's leg: speech, then the card keyed as tones (quiet between them), then speech again.
    Returns the PCMU payload and the [start, end) sample spans of the tones."""
    speech_samples = list(g711.decode(speech, "PCMU"))
    samples = speech_samples[:]
    spans = []
    for digit in TONE_CARD:
        samples.extend([0] * (PAUSE_MS * RATE // 1000))
        spans.append((len(samples), len(samples) + TONE_MS * RATE // 1000))
        samples.extend(dtmf_tone(digit, TONE_MS * RATE // 1000))
    samples.extend([0] * 4000)
    samples.extend(speech_samples)
    samples.extend([0] * (160 - len(samples) % 160))
    return g711.encode(samples, "PCMU"), spans


def test_keyed_card_numbers_are_silenced_and_never_stored(airlock, speech_a, speech_b):
    customer_payload, tone_spans = keyed_speech(speech_a)
    agent_payload = speech_b + bytes([g711.silence_byte("PCMU")]) * (len(customer_payload) - len(speech_b))
    # The agent's leg keys EVENT_CARD as telephone-events (4 slots = 80 ms each, 8 slots apart) from 4 s on,
    # after its speech.
    events = [Dtmf(at=200 + 8 * index, event=int(digit), packets=4) for index, digit in enumerate(EVENT_CARD)]
    labels = ["customer", "agent"]
    ctype, body = sip.multipart(
        sip.offer_sdp([sip.OfferStream(label, 42000 + 2 * i) for i, label in enumerate(labels)]),
        sip.metadata_xml(labels))
    uac = sip.SipUac(airlock.sip)
    try:
        answer, _ = uac.invite(body, ctype)
        media = sip.check_siprec_answer(answer, labels)
        senders = {
            "customer": RtpSender(("127.0.0.1", media["customer"].port), customer_payload, g711.PT_PCMU),
            "agent": RtpSender(("127.0.0.1", media["agent"].port), agent_payload, g711.PT_PCMU, dtmf=events),
        }
        for sender in senders.values():
            sender.start()
        reports = {}
        for label, sender in senders.items():
            reports[label] = sender.join(30)
            sender.close()
        time.sleep(0.2)
        assert uac.bye().status == 200
    finally:
        uac.close()

    [call] = airlock.wait_calls(1)
    manifest = airlock.manifest(call)
    streams = stream_by_label(manifest)
    wav = airlock.recording(call)
    silenced = manifest["audio_redactions"]
    assert manifest["audio_redactions_late"] == 0, manifest
    assert "telephone_events_sealed" not in manifest
    assert manifest["telephone_event_count"] == len(EVENT_CARD), manifest["telephone_event_count"]

    # The customer's channel: every tone silenced with its guard, everything else as sent.
    channel = streams["customer"]["channel"]
    tone_dtmf = [s for s in silenced if s["channel"] == channel and s["kind"] == "DTMF"]
    assert len(tone_dtmf) == len(TONE_CARD), silenced
    offset = audio.assert_exact_but_silenced(wav.channel(channel), g711.decode(customer_payload, "PCMU"),
                                             tone_dtmf, RATE, "customer")
    recorded = wav.channel(channel)
    for start, end in tone_spans:
        window = recorded[offset + start - GUARD + 8:offset + end + GUARD - 8]
        assert not any(window), f"tone at {start} not silenced: peak {max(abs(s) for s in window)}"
    assert any(s["channel"] == channel and s["kind"] == "CARD_NUMBER" for s in silenced), silenced

    # The agent's channel: the events' slots (carrying no audio here) are listed and keyed as a card number.
    agent = streams["agent"]["channel"]
    event_dtmf = [s for s in silenced if s["channel"] == agent and s["kind"] == "DTMF"]
    assert len(event_dtmf) == len(EVENT_CARD), silenced
    assert all(80 <= s["end_ms"] - s["start_ms"] <= 80 + 60 for s in event_dtmf), event_dtmf
    assert any(s["channel"] == agent and s["kind"] == "CARD_NUMBER" for s in silenced), silenced
    offset = audio.assert_exact_but_silenced(wav.channel(agent), reports["agent"].expected_samples("PCMU"),
                                             event_dtmf, RATE, "agent")
    # Each event is listed where it was sent (its slots from the sender's schedule), with its ± 20 ms guard.
    for index, event in enumerate(events):
        start, end = offset + event.at * 160, offset + (event.at + event.packets) * 160
        [span] = [s for s in event_dtmf if s["start_ms"] * 8 < end and start < s["end_ms"] * 8]
        assert span["start_ms"] * 8 <= start - GUARD + 8 and span["end_ms"] * 8 >= end + GUARD - 8, (index, span)
        assert (span["end_ms"] - span["start_ms"]) * 8 <= end - start + 2 * GUARD + 24, (index, span)

    metrics = airlock.metrics_text()
    dtmf_seconds = float(re.search(r'^airlock_audio_silenced_seconds_total\{reason="dtmf"\} (\S+)$', metrics,
                                   re.M).group(1))
    # 32 presses of 80 ms, each with 2 × 20 ms guard.
    assert 32 * 0.12 - 0.2 <= dtmf_seconds <= 32 * 0.12 + 0.3, dtmf_seconds

    airlock.terminate()
    texts = {
        "log": airlock.log.read_text(errors="replace"),
        "manifest": (call / "manifest.json").read_text(),
        "events": (airlock.uplink / "events.jsonl").read_text(),
    }
    for where, text in texts.items():
        digits = re.sub(r"\D", "", text)
        for card in (TONE_CARD, EVENT_CARD):
            assert card[:8] not in digits and card[-8:] not in digits, f"keyed digits in {where}"
