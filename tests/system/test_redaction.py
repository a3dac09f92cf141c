"""Transcript redaction end to end: a SIPREC call in which the customer, asked for payment details, reads a
card number and its security code (espeak-ng speech, turn by turn on two legs). What the appliance publishes —
transcript.json, transcript.vtt and the segment events — carries tokens naming what was redacted and the
redacted spans' kinds and call times, never the digits; and in the recording (decrypted with age) the spoken
digits are silence while every other sample is as sent, with the manifest listing the silenced spans."""

from __future__ import annotations

import json
import re

from harness import audio, g711
from harness.airlock import stream_by_label
from test_transcription import published_transcript, segment_events, send_siprec, transcription_on

CARD = "4929534627813676"
CVV = "737"


def dialogue(turns: list[tuple[str, list[tuple[str, bool]]]], tmp_path):
    """One PCMU payload per speaker: each turn spoken in order (its pieces one after another), the other
    speaker silent meanwhile, with 0.8 s between turns. Returns the payloads and, per speaker, the sample
    ranges of the pieces marked secret."""
    silence = bytes([g711.silence_byte("PCMU")])
    legs = {speaker: b"" for speaker, _ in turns}
    secrets: dict[str, list[tuple[int, int]]] = {speaker: [] for speaker in legs}
    for index, (speaker, pieces) in enumerate(turns):
        start = max(len(data) for data in legs.values())
        for other in legs:
            legs[other] += silence * (start - len(legs[other]))
        for part, (text, secret) in enumerate(pieces):
            spoken = audio.speech(text, tmp_path, "PCMU", name=f"turn{index}-{part}", speed=150)
            if secret:
                secrets[speaker].append((len(legs[speaker]), len(legs[speaker]) + len(spoken)))
            legs[speaker] += spoken
        legs[speaker] += silence * 6400
    longest = max(len(data) for data in legs.values())
    return {speaker: data + silence * (longest - len(data)) for speaker, data in legs.items()}, secrets


def digits_of(text: str) -> str:
    spoken = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
              "seven": "7", "eight": "8", "nine": "9"}
    words = re.findall(r"[a-z]+|\d", text.lower())
    return "".join(spoken.get(word, word) for word in words if word.isdigit() or word in spoken)


def test_a_card_number_and_security_code_never_leave_in_the_transcript_or_the_audio(airlock_factory, tmp_path):
    airlock = airlock_factory(overrides=transcription_on()).start()
    payloads, secrets = dialogue([
        ("agent", [("Thank you. Can I have the long card number on the front of your card, please?", False)]),
        ("customer", [("Sure. It is", False),
                      (", ".join(" ".join(CARD[i:i + 4]) for i in range(0, 16, 4)) + ".", True)]),
        ("agent", [("And the three digit security code on the back of the card?", False)]),
        ("customer", [("It is " + " ".join(CVV) + ".", False)]),
        ("agent", [("Thank you, that payment is complete.", False)]),
    ], tmp_path)
    reports = send_siprec(airlock, payloads)
    [call] = airlock.wait_calls(1, timeout=90)
    transcript = published_transcript(airlock, call)

    kinds = [r["kind"] for s in transcript["segments"] for r in s["redactions"]]
    assert "CARD_NUMBER" in kinds, transcript["segments"]
    customer = " ".join(s["text"] for s in transcript["segments"] if s["speaker"] == "customer")
    assert "[CARD_NUMBER]" in customer, customer
    for segment in transcript["segments"]:
        for redaction in segment["redactions"]:
            assert segment["start_ms"] <= redaction["start_ms"] <= redaction["end_ms"] <= segment["end_ms"] + 1000
        # The redacted words are one token in the word list too.
        assert not any(re.search(r"\d{3}", word["text"]) for word in segment["words"]), segment["words"]

    published = [
        (call / "transcript.json").read_text(),
        (call / "transcript.vtt").read_text(),
        json.dumps(segment_events(airlock, call)),
    ]
    for text in published:
        # No four digits of the card in a row, written or spoken, and not the card as a whole.
        assert not any(CARD[i:i + 7] in digits_of(text) for i in range(10)), text[:2000]
        assert CARD[:7] not in text.replace(" ", "")

    assert_spoken_secrets_silenced(airlock, call, payloads, secrets, reports)


def assert_spoken_secrets_silenced(airlock, call, payloads, secrets, reports) -> None:
    """In the decrypted recording: the voiced samples of each secret piece (the card number; whether whisper
    tiny hears the espeak security code at 8 kHz varies, so it is not one) are (almost all) silence, the
    silenced spans the manifest lists are silence, every other sample is as sent, and nothing came late."""
    manifest = airlock.manifest(call)
    assert manifest["audio_redactions_late"] == 0, manifest["audio_redactions"]
    silenced = manifest["audio_redactions"]
    assert "CARD_NUMBER" in {s["kind"] for s in silenced}, silenced
    streams = stream_by_label(manifest)
    wav = airlock.recording(call)
    rate = wav.sample_rate
    for speaker in payloads:
        channel = streams[speaker]["channel"]
        recorded = wav.channel(channel)
        expected = reports[speaker].expected_samples("PCMU")
        offset = audio.assert_exact_but_silenced(
            recorded, expected, [s for s in silenced if s["channel"] == channel], rate, speaker)
        for start, end in secrets[speaker]:
            voiced = [i for i in range(start, end) if abs(expected[i]) > 300]
            kept = [i for i in voiced if recorded[offset + i] != 0]
            assert len(kept) <= 0.02 * len(voiced), \
                f"{speaker}: {len(kept)} of {len(voiced)} voiced samples of a secret kept (first at {kept[:3]})"
