"""Checks of the harness itself (no airlock needed): the G.711 tables agree with sox's decoder, the WAV parser
reads what sox writes, bencode round-trips, and the SIPREC bodies parse back."""

from __future__ import annotations

import subprocess
from array import array

from harness import audio, g711, sip
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
