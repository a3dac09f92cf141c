"""Checks of the harness itself (no airlock needed): the G.711 tables agree with sox's decoder, the WAV parser
reads what sox writes, bencode round-trips, and the SIPREC bodies parse back."""

from __future__ import annotations

import subprocess
from array import array

from harness import audio, g711, sip, voicestream
from harness.ng import bdecode, bencode


def sox_decode(codec: str, data: bytes, tmp_path) -> array:
    sox = audio.require_tool("sox")
    src, dst = tmp_path / f"in.{codec}", tmp_path / f"out-{codec}.raw"
    src.write_bytes(data)
    enc = {"PCMU": "mu-law", "PCMA": "a-law"}[codec]
    subprocess.run([sox, "-q", "-t", "raw", "-r", "8000", "-c", "1", "-e", enc, "-b", "8", str(src),
                    "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", str(dst)], check=True)
    out = array("h")
    out.frombytes(dst.read_bytes())
    return out


def test_g711_tables_match_sox(tmp_path):
    every_code = bytes(range(256))
    for codec in ("PCMU", "PCMA"):
        assert g711.decode(every_code, codec) == sox_decode(codec, every_code, tmp_path), codec
    assert g711.decode(bytes([g711.silence_byte("PCMU")]), "PCMU")[0] == 0
    assert abs(g711.decode(bytes([g711.silence_byte("PCMA")]), "PCMA")[0]) <= 8


def test_wav_parser_reads_sox_output(tmp_path):
    sox = audio.require_tool("sox")
    path = tmp_path / "t.wav"
    subprocess.run([sox, "-q", "-n", "-r", "8000", "-c", "2", "-b", "16", "-e", "signed-integer", str(path),
                    "synth", "0.5", "sine", "440", "sine", "660"], check=True)
    wav = audio.parse_wav(path.read_bytes())
    assert (wav.sample_rate, wav.channels, wav.bits, wav.frames) == (8000, 2, 16, 4000)
    assert wav.channel(0) != wav.channel(1)


def test_exact_run_search():
    hay = array("h", [0] * 5 + [1, -2, 3, 256, -256] + [0] * 3)
    assert audio.find_run(hay, array("h", [1, -2, 3, 256, -256])) == 5
    assert audio.find_run(hay, array("h", [256, 1])) == -1
    audio.assert_exact_run(hay, array("h", [1, -2, 3, 256, -256]), "t")
    assert audio.longest_prefix_run(hay, array("h", [1, -2, 3, 7]), probe=2) == (5, 3)


def test_bencode_round_trip():
    doc = {"command": "offer", "flags": ["all", "SIPREC"], "n": 3, "nested": {"x": [1, "y"]}}
    assert bdecode(bencode(doc)) == doc


def test_siprec_body_parses_back():
    ctype, body = sip.siprec_body(["2", "1"], [4000, 4002])
    assert ctype.startswith("multipart/mixed;boundary=")
    boundary = ctype.split("=", 1)[1]
    parts = body.split(f"--{boundary}".encode())
    assert len(parts) == 4 and parts[-1].startswith(b"--")
    _c, media = sip.parse_sdp(parts[1].split(b"\r\n\r\n", 1)[1].decode())
    assert [(m.label, m.port, m.direction) for m in media] == [("2", 4000, "sendonly"), ("1", 4002, "sendonly")]
    assert b"recording-session" in parts[2] and b"<label>1</label>" in parts[2]


def test_voicestream_stubs_encode_the_wire_format(vs_stubs):
    """Stubs generated from the project's voice.proto produce the reference's golden bytes."""
    pb2, pb2_grpc = vs_stubs
    start = pb2.StreamingVoiceResponse(status=pb2.StreamingStatus(code=voicestream.SRV_REQ_START_STREAMING))
    assert start.SerializeToString() == bytes.fromhex("0a0308e907")
    cfg = pb2.StreamingVoiceRequest(streaming_config=pb2.StreamingConfig(
        voice_config=pb2.VoiceConfig(encoding=pb2.VoiceConfig.LINEAR16, sample_rate_hertz=8000),
        vcc_call_id="300000000115255", call_leg=pb2.StreamingConfig.CUSTOMER))
    assert cfg.SerializeToString() == bytes.fromhex("0a1a0a05080110c03e120f333030303030303030313135323535") \
        + bytes.fromhex("3001")
    ended = pb2.StreamingVoiceRequest(streaming_status=pb2.StreamingStatus(code=voicestream.CLT_CALL_ENDED))
    assert ended.SerializeToString() == bytes.fromhex("1a020801")
    assert pb2.StreamingVoiceRequest(audio_content=b"\x01\x02\x03\x04").SerializeToString() == \
        bytes.fromhex("120401020304")
    # An undocumented status code (2001) survives a round trip (open enum).
    odd = pb2.StreamingVoiceRequest(streaming_status=pb2.StreamingStatus(code=2001))
    assert pb2.StreamingVoiceRequest.FromString(odd.SerializeToString()).streaming_status.code == 2001
    assert {v: k for k, v in voicestream.LEGS.items()} == {
        pb2.StreamingConfig.AGENT: "agent", pb2.StreamingConfig.CUSTOMER: "customer",
        pb2.StreamingConfig.SUPERVISOR: "supervisor"}
    assert hasattr(pb2_grpc, "VoiceStub")
    assert pb2.DESCRIPTOR.services_by_name["Voice"].methods_by_name["StreamingVoice"].full_name == \
        "five9.voicestream.Voice.StreamingVoice"


def test_voicestream_pcm_chunking():
    samples = array("h", [1, -2, 300, -32768, 32767] * 401)  # 2005 samples
    parts = voicestream.chunks(samples, 1600)
    assert [len(p) for p in parts] == [1600, 1600, 810]
    assert b"".join(parts)[:4] == bytes([1, 0, 0xFE, 0xFF])  # little-endian
    assert voicestream.pcm_samples(b"".join(parts)) == samples
    assert [len(p) for p in voicestream.chunks(samples, 320)] == [320] * 12 + [170]


def test_speech_pcm16_is_8khz_linear_speech(tmp_path):
    pcm = audio.speech_pcm16("Testing one two three.", tmp_path, "t16")
    assert len(pcm) % 160 == 0 and 0.8 * 8000 < len(pcm) < 4 * 8000
    # The same words as PCMU decode to nearly the same waveform (the µ-law quantisation error only).
    mu = g711.decode(audio.speech("Testing one two three.", tmp_path, "PCMU", "t8"), "PCMU")
    assert len(mu) == len(pcm)
    err = sum(abs(a - b) for a, b in zip(mu, pcm)) / len(pcm)
    peak = max(abs(s) for s in pcm)
    assert err < peak * 0.05, (err, peak)
