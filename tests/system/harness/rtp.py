"""A real-time RTP sender for G.711 test audio: 20 ms packets, correct seq/timestamp progression, optional SSRC
change and optional RFC 4733 telephone-event packets (which replace the audio of the time slots they cover)."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from array import array
from dataclasses import dataclass, field

from . import g711

PTIME_MS = 20
SAMPLES_PER_PACKET = 160  # 8 kHz x 20 ms


def rtp_header(pt: int, seq: int, ts: int, ssrc: int, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | (pt & 0x7F), seq & 0xFFFF, ts & 0xFFFFFFFF,
                       ssrc & 0xFFFFFFFF)


@dataclass
class Dtmf:
    """A telephone-event covering `packets` time slots starting at audio packet index `at`."""
    at: int
    event: int = 5
    packets: int = 5
    volume: int = 10


@dataclass
class SendReport:
    packets: int = 0            # RTP packets sent (audio + telephone-event)
    audio_packets: int = 0
    event_packets: int = 0
    sent_payload: bytearray = field(default_factory=bytearray)  # audio payload actually sent, in order
    audio_slots: list = field(default_factory=list)  # per time slot: True if audio was sent, False if DTMF
    ssrcs: list = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0

    def expected_samples(self, codec: str, silence_for_events: bool = True) -> array:
        """Decoded samples the recorder should hold: the audio sent, with silence where events replaced audio."""
        out = array("h")
        pos = 0
        for was_audio in self.audio_slots:
            if was_audio:
                out.extend(g711.decode(bytes(self.sent_payload[pos:pos + SAMPLES_PER_PACKET]), codec))
                pos += SAMPLES_PER_PACKET
            elif silence_for_events:
                out.extend([0] * SAMPLES_PER_PACKET)
        return out


class RtpSender:
    """Sends `payload` (G.711 bytes) to `dest` in real time from `sock` (or a fresh loopback socket)."""

    def __init__(self, dest: tuple[str, int], payload: bytes, pt: int = g711.PT_PCMU, *,
                 sock: socket.socket | None = None, ssrc: int | None = None, seq0: int | None = None,
                 ts0: int | None = None, ssrc_change_at: int | None = None, dtmf: list[Dtmf] | None = None,
                 event_pt: int = 101, stop_after: int | None = None):
        if len(payload) % SAMPLES_PER_PACKET:
            raise ValueError("payload must be whole 20 ms packets")
        self.dest = dest
        self.payload = payload
        self.pt = pt
        self.own_socket = sock is None
        self.sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if self.own_socket:
            self.sock.bind(("127.0.0.1", 0))
        rng = random.Random()
        self.ssrc = rng.getrandbits(32) if ssrc is None else ssrc
        self.seq = rng.getrandbits(16) if seq0 is None else seq0
        self.ts = rng.getrandbits(32) if ts0 is None else ts0
        self.ssrc_change_at = ssrc_change_at
        self.dtmf = {d.at: d for d in (dtmf or [])}
        self.event_pt = event_pt
        self.stop_after = stop_after
        self.report = SendReport()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def slots(self) -> int:
        return len(self.payload) // SAMPLES_PER_PACKET

    def _send(self, packet: bytes) -> None:
        self.sock.sendto(packet, self.dest)
        self.report.packets += 1

    def run(self) -> SendReport:
        """Sends everything (blocking). Timing is paced against an absolute schedule, so it does not drift."""
        rep = self.report
        rep.ssrcs.append(self.ssrc)
        start = time.monotonic()
        rep.started_at = time.time()
        slot = 0
        n_slots = self.slots()
        first = True
        while slot < n_slots and not self._stop.is_set():
            if self.stop_after is not None and slot >= self.stop_after:
                break
            if self.ssrc_change_at is not None and slot == self.ssrc_change_at:
                # A new source: new SSRC, new random sequence and timestamp bases.
                self.ssrc = random.getrandbits(32)
                self.seq = random.getrandbits(16)
                self.ts = random.getrandbits(32)
                rep.ssrcs.append(self.ssrc)
                first = True
            event = self.dtmf.get(slot)
            if event is not None:
                slot = self._send_event(event, start, slot)
                continue
            self._sleep_until(start + slot * PTIME_MS / 1000)
            chunk = self.payload[slot * SAMPLES_PER_PACKET:(slot + 1) * SAMPLES_PER_PACKET]
            self._send(rtp_header(self.pt, self.seq, self.ts, self.ssrc, marker=first) + chunk)
            first = False
            rep.audio_packets += 1
            rep.sent_payload += chunk
            rep.audio_slots.append(True)
            self.seq += 1
            self.ts += SAMPLES_PER_PACKET
            slot += 1
        rep.finished_at = time.time()
        return rep

    def _send_event(self, event: Dtmf, start: float, slot: int) -> int:
        """RFC 4733: one packet per slot with growing duration, the event's start timestamp, marker on the first,
        and the final (E bit) packet sent three times."""
        rep = self.report
        event_ts = self.ts
        for k in range(event.packets):
            self._sleep_until(start + (slot + k) * PTIME_MS / 1000)
            duration = (k + 1) * SAMPLES_PER_PACKET
            end = k == event.packets - 1
            body = struct.pack("!BBH", event.event & 0xFF, (0x80 if end else 0) | (event.volume & 0x3F), duration)
            copies = 3 if end else 1
            for _ in range(copies):
                self._send(rtp_header(self.event_pt, self.seq, event_ts, self.ssrc, marker=(k == 0)) + body)
                rep.event_packets += 1
                self.seq += 1
            rep.audio_slots.append(False)
        # The audio of those slots is not sent (the event replaced it); time moves on.
        self.ts += event.packets * SAMPLES_PER_PACKET
        return slot + event.packets

    def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    # --- background use --------------------------------------------------------------------------------
    def start(self) -> "RtpSender":
        def target():
            try:
                self.run()
            except BaseException as exc:  # reported by join()
                self.error = exc

        self._thread = threading.Thread(target=target, name=f"rtp->{self.dest[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> SendReport:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("RTP sender did not finish in time")
        if self.error:
            raise self.error
        return self.report

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(2)
        if self.own_socket:
            self.sock.close()
