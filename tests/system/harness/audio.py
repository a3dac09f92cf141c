"""Test audio (espeak-ng speech rendered to 8 kHz G.711 by sox), WAV parsing, age decryption, sample matching."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

from . import g711


def require_tool(name: str) -> str:
    """The path of a required tool; a missing tool fails the test (never skips it)."""
    path = shutil.which(name)
    if path is None:
        import pytest

        pytest.fail(f"required tool `{name}` is not installed (run ci/setup)", pytrace=False)
    return path


def _espeak_wav(text: str, workdir: Path, stem: str, voice: str, speed: int) -> Path:
    """`text` spoken by espeak-ng into `workdir/{stem}.wav` (the tools are required, the directory made)."""
    require_tool("espeak-ng")
    require_tool("sox")
    workdir.mkdir(parents=True, exist_ok=True)
    wav = workdir / f"{stem}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
                   check=True, capture_output=True)
    return wav


def speech(text: str, workdir: Path, codec: str = "PCMU", name: str | None = None,
           voice: str = "en", speed: int = 175, pad_ms: int = 0) -> bytes:
    """Speaks `text` with espeak-ng and returns it as raw 8 kHz G.711 bytes encoded by sox.

    The length is rounded up to whole 20 ms packets with the codec's silence code.
    `pad_ms` of digital silence is put in front (useful to see leading silence handled).
    """
    stem = name or f"speech-{abs(hash((text, voice, speed))) & 0xFFFFFF:06x}"
    wav = _espeak_wav(text, workdir, stem, voice, speed)
    raw = workdir / f"{stem}.{codec.lower()}"
    encoding = {"PCMU": "mu-law", "PCMA": "a-law"}[codec.upper()]
    subprocess.run(["sox", "-q", str(wav), "-r", "8000", "-c", "1", "-e", encoding, "-b", "8", "-t", "raw", str(raw)],
                   check=True, capture_output=True)
    data = raw.read_bytes()
    silence = bytes([g711.silence_byte(codec)])
    data = silence * (pad_ms * 8) + data
    if len(data) % 160:
        data += silence * (160 - len(data) % 160)
    # The speech must not be mostly silence, or exact-match assertions would prove little.
    loud = sum(1 for s in g711.decode(data, codec) if abs(s) > 500)
    assert loud > len(data) // 10, "espeak-ng produced (nearly) silent audio"
    return data


def speech_pcm16(text: str, workdir: Path, name: str | None = None, voice: str = "en", speed: int = 175,
                 pad_ms: int = 0) -> array:
    """Speaks `text` with espeak-ng and returns it as 8 kHz mono signed 16-bit linear PCM samples (sox resamples).

    The length is rounded up to whole 20 ms (160 samples) with digital silence; `pad_ms` of silence goes in front.
    """
    stem = name or f"speech16-{abs(hash((text, voice, speed))) & 0xFFFFFF:06x}"
    wav = _espeak_wav(text, workdir, stem, voice, speed)
    raw = workdir / f"{stem}.s16"
    subprocess.run(["sox", "-q", str(wav), "-r", "8000", "-c", "1", "-e", "signed-integer", "-b", "16", "-L",
                    "-t", "raw", str(raw)], check=True, capture_output=True)
    samples = array("h")
    data = raw.read_bytes()
    samples.frombytes(data[:len(data) - len(data) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    samples = array("h", bytes(pad_ms * 8 * 2)) + samples
    if len(samples) % 160:
        samples.extend([0] * (160 - len(samples) % 160))
    loud = sum(1 for s in samples if abs(s) > 500)
    assert loud > len(samples) // 10, "espeak-ng produced (nearly) silent audio"
    return samples


def g722_encoder() -> Path:
    """appliance/media/examples/g722_encode: $G722_ENCODE_BIN, else beside the airlock binary under test."""
    root = Path(__file__).resolve().parents[3]
    airlock = Path(os.environ.get("AIRLOCK_BIN", root / "target" / "release" / "airlock"))
    path = Path(os.environ.get("G722_ENCODE_BIN", airlock.parent / "examples" / "g722_encode"))
    if not path.is_file():
        import pytest

        pytest.fail(f"{path} missing: cargo build --release -p airlock-media --example g722_encode",
                    pytrace=False)
    return path


def g722_encode(samples: array) -> bytes:
    """16 kHz 16-bit PCM as G.722 (64 kbit/s: one byte per two samples), by our own encoder example."""
    little_endian = array("h", samples)
    if sys.byteorder == "big":
        little_endian.byteswap()
    encoded = subprocess.run([str(g722_encoder())], input=little_endian.tobytes(), capture_output=True,
                             check=True).stdout
    assert len(encoded) == len(samples) // 2, (len(encoded), len(samples))
    return encoded


@dataclass
class Wav:
    sample_rate: int
    channels: int
    bits: int
    frames: int
    data: array  # interleaved int16

    def channel(self, index: int) -> array:
        return self.data[index::self.channels]


def parse_wav(blob: bytes) -> Wav:
    """Parses a PCM WAV. Tolerates a data chunk whose declared size is 0/too large (use what is there)."""
    if len(blob) < 12 or blob[0:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"not a RIFF/WAVE file (starts {blob[:12]!r})")
    pos = 12
    fmt = None
    while pos + 8 <= len(blob):
        cid, size = blob[pos:pos + 4], struct.unpack_from("<I", blob, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", blob, body)
            if tag not in (1, 0xFFFE):
                raise ValueError(f"WAV format tag {tag} is not PCM")
            fmt = (rate, channels, bits)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            rate, channels, bits = fmt
            if bits != 16:
                raise ValueError(f"expected 16-bit PCM, got {bits}")
            available = len(blob) - body
            if size == 0 or size > available:
                size = available
            size -= size % (2 * channels)
            samples = array("h")
            samples.frombytes(blob[body:body + size])
            if sys.byteorder == "big":
                samples.byteswap()
            return Wav(rate, channels, bits, len(samples) // channels, samples)
        pos = body + size + (size & 1)
    raise ValueError("no data chunk")


def age_decrypt(path: Path, identity: Path) -> bytes:
    require_tool("age")
    proc = subprocess.run(["age", "-d", "-i", str(identity), str(path)], capture_output=True)
    if proc.returncode != 0:
        raise AssertionError(f"age -d failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def age_keygen(path: Path) -> str:
    """Writes a fresh identity to `path` and returns its public recipient (age1...)."""
    require_tool("age-keygen")
    proc = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, check=True)
    for line in path.read_text().splitlines():
        if line.startswith("# public key: "):
            return line.split(": ", 1)[1].strip()
    # age-keygen also prints "Public key: age1..." on stderr
    for line in proc.stderr.decode().splitlines():
        if "age1" in line:
            return line.split()[-1]
    raise AssertionError("age-keygen printed no public key")


def find_run(haystack: array, needle: array, start: int = 0) -> int:
    """Index of the first sample-exact occurrence of `needle` in `haystack` at or after `start`, or -1."""
    hb, nb = haystack.tobytes(), needle.tobytes()
    pos = hb.find(nb, start * 2)
    while pos != -1 and pos % 2:
        pos = hb.find(nb, pos + 1)
    return -1 if pos == -1 else pos // 2


def nonzero_outside(samples: array, runs: list[tuple[int, int]]) -> list[int]:
    """Indices (first few) of non-zero samples outside the given [start, end) runs."""
    bad = []
    edges = sorted(runs)
    cursor = 0
    for start, end in edges + [(len(samples), len(samples))]:
        for i in range(cursor, start):
            if samples[i] != 0:
                bad.append(i)
                if len(bad) >= 10:
                    return bad
        cursor = max(cursor, end)
    return bad


def assert_exact_run(channel: array, expected: array, what: str) -> int:
    """Asserts that `channel` holds `expected` as one contiguous, sample-exact run with only silence around it."""
    offset = find_run(channel, expected)
    if offset < 0:
        raise AssertionError(
            f"{what}: the {len(expected)} sent samples do not appear sample-exact in the channel "
            f"({len(channel)} samples; {describe_mismatch(channel, expected)})")
    bad = nonzero_outside(channel, [(offset, offset + len(expected))])
    assert not bad, f"{what}: non-silent samples outside the sent audio at {bad} (run at {offset})"
    return offset


def locate_run(channel: array, expected: array) -> int:
    """Where `expected` starts in `channel`, anchored on the first voiced stretch of 800 samples found there
    sample-exact (earlier ones may have been silenced); -1 when none is."""
    probe = next((i for i, s in enumerate(expected) if abs(s) > 500), len(expected))
    while probe + 800 <= len(expected):
        chunk = expected[probe:probe + 800]
        anchor = find_run(channel, chunk) if max(abs(s) for s in chunk) > 500 else -1
        if anchor >= 0:
            return anchor - probe
        probe += 4000
    return -1


def assert_exact_but_silenced(channel: array, expected: array, silenced: list[dict], rate: int, what: str) -> int:
    """Asserts that `channel` holds `expected` sample-exact (found by its first voiced samples) with silence
    around it, except inside the manifest's silenced spans (`[{start_ms, end_ms}]`, call time = channel
    index), which must be silence. Returns the run's offset in the channel."""
    offset = locate_run(channel, expected)
    assert offset >= 0, f"{what}: no voiced stretch of the sent audio is in the channel as sent"
    assert offset >= 0 and offset + len(expected) <= len(channel), f"{what}: the run does not fit (at {offset})"
    outer = bytearray(len(channel))  # 1 where a span may have silenced (its ms edges rounded outwards)
    for span in silenced:
        inner = range((span["start_ms"] + 1) * rate // 1000, min(len(channel), (span["end_ms"] - 1) * rate // 1000))
        kept = [i for i in inner if channel[i] != 0]
        assert not kept, f"{what}: samples kept inside the silenced span {span} at {kept[:5]}"
        for i in range(span["start_ms"] * rate // 1000, min(len(channel), -(-span["end_ms"] * rate // 1000))):
            outer[i] = 1
    changed = [i for i in range(len(expected)) if not outer[offset + i] and channel[offset + i] != expected[i]]
    assert not changed, f"{what}: samples outside the silenced spans differ at {changed[:10]} (run at {offset})"
    bad = [i for i in nonzero_outside(channel, [(offset, offset + len(expected))]) if not outer[i]]
    assert not bad, f"{what}: non-silent samples outside the sent audio at {bad} (run at {offset})"
    return offset


def longest_prefix_run(channel: array, expected: array, probe: int = 160) -> tuple[int, int]:
    """Where `expected`'s beginning sits in `channel` and how many samples of it match contiguously from there.

    Returns (offset, length); (-1, 0) if not even the first `probe` non-silent samples are found.
    """
    first = next((i for i, s in enumerate(expected) if s != 0), None)
    if first is None:
        return -1, 0
    anchor = find_run(channel, expected[first:first + probe])
    if anchor < 0:
        return -1, 0
    offset = anchor - first
    if offset < 0:
        return -1, 0
    n = 0
    limit = min(len(expected), len(channel) - offset)
    # compare in blocks for speed
    block = 800
    while n < limit:
        m = min(block, limit - n)
        if channel[offset + n:offset + n + m] == expected[n:n + m]:
            n += m
            continue
        while n < limit and channel[offset + n] == expected[n]:
            n += 1
        break
    return offset, n


def describe_mismatch(channel: array, expected: array) -> str:
    offset, n = longest_prefix_run(channel, expected)
    if offset < 0:
        peak = max((abs(s) for s in channel), default=0)
        return f"start of the audio not found at all; channel peak |x|={peak}"
    return f"start found at sample {offset}, matches for {n} of {len(expected)} samples"
