"""rtpengine's ng control protocol: bencoded dictionaries over UDP, each datagram "<cookie> <bencode>"."""

from __future__ import annotations

import random
import socket
import string


def bencode(value) -> bytes:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes):
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing bytes after bencoded value at {end}")
    return value


def _decode(data: bytes, i: int):
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c == b"l":
        i += 1
        out = []
        while data[i:i + 1] != b"e":
            v, i = _decode(data, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while data[i:i + 1] != b"e":
            k, i = _decode(data, i)
            v, i = _decode(data, i)
            out[k.decode() if isinstance(k, bytes) else k] = v
        return out, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        n = int(data[i:colon])
        raw = data[colon + 1:colon + 1 + n]
        try:
            return raw.decode(), colon + 1 + n
        except UnicodeDecodeError:
            return raw, colon + 1 + n
    raise ValueError(f"bad bencode at {i}: {data[i:i + 10]!r}")


class NgClient:
    def __init__(self, addr: tuple[str, int], timeout: float = 3.0) -> None:
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(timeout)

    def command(self, command: str, **params) -> dict:
        """Sends one command; returns the reply dict, raising if result is not ok."""
        reply = self.raw(command, **params)
        if reply.get("result") not in ("ok", "pong"):
            raise AssertionError(f"rtpengine {command} failed: {reply}")
        return reply

    def raw(self, command: str, **params) -> dict:
        cookie = "".join(random.choice(string.ascii_lowercase) for _ in range(12))
        msg = {k.replace("_", "-"): v for k, v in params.items()}
        msg["command"] = command
        self.sock.sendto(cookie.encode() + b" " + bencode(msg), self.addr)
        while True:
            data, _ = self.sock.recvfrom(65535)
            got_cookie, _, body = data.partition(b" ")
            if got_cookie.decode() == cookie:
                return bdecode(body)

    def close(self) -> None:
        self.sock.close()
