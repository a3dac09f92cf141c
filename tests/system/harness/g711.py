"""G.711 decoding (ITU-T G.711 expansion to 16-bit linear PCM), written from the segment/mantissa formula, and
encoding to the nearest code (enough for test signals: what is checked is the decoding of the codes sent).

Values match the usual 16-bit expansion tables: mu-law spans -32124..32124, A-law -32256..32256.
"""

from array import array
from bisect import bisect_left


def ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if code & 0x80 else magnitude


def alaw_to_linear(code: int) -> int:
    code ^= 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if code & 0x80 else -magnitude


ULAW_TABLE = tuple(ulaw_to_linear(i) for i in range(256))
ALAW_TABLE = tuple(alaw_to_linear(i) for i in range(256))

# RTP static payload types
PT_PCMU = 0
PT_PCMA = 8


def decode(payload: bytes, codec: str) -> array:
    """Decodes PCMU or PCMA bytes into an array('h') of samples."""
    table = {"PCMU": ULAW_TABLE, "PCMA": ALAW_TABLE}[codec.upper()]
    return array("h", (table[b] for b in payload))


def silence_byte(codec: str) -> int:
    """The code that decodes to 0 (digital silence)."""
    return {"PCMU": 0xFF, "PCMA": 0xD5}[codec.upper()]


def _nearest_code(table: tuple[int, ...]):
    pairs = sorted((value, code) for code, value in enumerate(table))
    values = [value for value, _ in pairs]

    def nearest(sample: int) -> int:
        i = bisect_left(values, sample)
        candidates = pairs[max(i - 1, 0):i + 1]
        return min(candidates, key=lambda pair: abs(pair[0] - sample))[1]

    return nearest


_ENCODERS = {"PCMU": _nearest_code(ULAW_TABLE), "PCMA": _nearest_code(ALAW_TABLE)}


def encode(samples, codec: str) -> bytes:
    """16-bit samples as PCMU or PCMA codes (the code whose expansion is nearest each sample)."""
    nearest = _ENCODERS[codec.upper()]
    return bytes(nearest(s) for s in samples)
