"""rtpengine 10.5 (Debian rtpengine-daemon) in userspace on loopback, driven over its ng protocol, as an
independent SIPREC media source: `subscribe request` with the SIPREC flag yields a multi-m-line sendonly offer
with a=label per party, and real RTP forks follow `subscribe answer`."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from . import audio, procs
from .ng import NgClient
from .sip import parse_sdp


class Rtpengine:
    def __init__(self, registry: procs.ProcessRegistry, workdir: Path) -> None:
        self.bin = audio.require_tool("rtpengine")
        self.registry = registry
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ng_port = procs.free_udp_port()
        self.port_min, self.port_max = procs.free_port_range(100)
        self.log = workdir / "rtpengine.log"
        self.proc = None
        self.ng: NgClient | None = None

    def start(self, timeout: float = 10.0) -> "Rtpengine":
        self.proc = self.registry.start("rtpengine", [
            self.bin, "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
            "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{self.ng_port}",
            f"--port-min={self.port_min}", f"--port-max={self.port_max}", "--log-level=6",
        ], log=self.log)
        self.ng = NgClient(("127.0.0.1", self.ng_port), timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"rtpengine exited {self.proc.returncode}:\n{procs.tail(self.log)}")
            try:
                if self.ng.raw("ping").get("result") == "pong":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"rtpengine did not answer ping:\n{procs.tail(self.log)}")
        self.ng.sock.settimeout(5)
        return self

    def stop(self) -> None:
        if self.ng:
            self.ng.close()
        if self.proc:
            procs.stop_process(self.proc, 5)


def party_sdp(port: int, session: int) -> str:
    return ("v=0\r\n"
            f"o=party {session} 1 IN IP4 127.0.0.1\r\n"
            "s=party\r\n"
            "c=IN IP4 127.0.0.1\r\n"
            "t=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n")


class TwoPartyCall:
    """Two parties (one loopback socket each) calling through rtpengine: `to_engine[tag]` is where each party
    sends its RTP (the port rtpengine gave the *other* side), ready for a SIPREC `subscribe request`."""

    def __init__(self, engine: Rtpengine, call_id: str) -> None:
        self.ng = engine.ng
        self.call_id = call_id
        self.socks: dict[str, socket.socket] = {}
        for tag in ("party-a", "party-b"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            self.socks[tag] = s
        offer = self.ng.command("offer", call_id=call_id, from_tag="party-a",
                                sdp=party_sdp(self.socks["party-a"].getsockname()[1], 1))
        answer = self.ng.command("answer", call_id=call_id, from_tag="party-a", to_tag="party-b",
                                 sdp=party_sdp(self.socks["party-b"].getsockname()[1], 2))
        self.to_engine = {"party-a": parse_sdp(answer["sdp"])[1][0].port,
                          "party-b": parse_sdp(offer["sdp"])[1][0].port}

    def subscribe(self, to_tag: str, **extra) -> dict:
        """rtpengine's SIPREC offer for both parties (`extra`: more ng keys, e.g. the transport protocol)."""
        return self.ng.command("subscribe request", call_id=self.call_id, flags=["all", "SIPREC"], to_tag=to_tag,
                               **extra)

    def close(self) -> None:
        try:
            self.ng.command("delete", call_id=self.call_id, from_tag="party-a")
        except (OSError, AssertionError):
            pass
        for s in self.socks.values():
            s.close()
