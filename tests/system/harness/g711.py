"""G.711 decoding (ITU-T G.711 expansion to 16-bit linear PCM), written from the segment/mantissa formula.

Values match the usual 16-bit expansion tables: mu-law spans -32124..32124, A-law -32256..32256.
"""

from array import array


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
