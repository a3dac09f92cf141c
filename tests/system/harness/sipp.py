"""SIPp (Debian sip-tester) as a SIPREC SRC: tests/sipp/siprec_src_two_streams.xml offers two labelled sendonly
streams with RFC 7865 metadata, writes the two answered media ports to ports.txt, holds the call for `-d` ms and
sends BYE. The test streams the RTP to those ports itself."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from . import audio, procs

SCENARIO = Path(__file__).resolve().parents[2] / "sipp" / "siprec_src_two_streams.xml"


class SippSiprecSrc:
    def __init__(self, registry: procs.ProcessRegistry, sip_port: int, workdir: Path, call_ms: int,
                 scenario: Path = SCENARIO) -> None:
        self.workdir = workdir
        self.call_ms = call_ms
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen = registry.start("sipp", [
            audio.require_tool("sipp"), f"127.0.0.1:{sip_port}", "-sf", str(scenario),
            "-i", "127.0.0.1", "-p", str(procs.free_port()), "-mi", "127.0.0.1", "-mp", str(procs.free_udp_pair()),
            "-t", "u1", "-m", "1", "-d", str(call_ms),
            "-timeout", "30", "-timeout_error", "-nostdin", "-trace_msg", "-trace_logs", "-trace_err",
        ], log=workdir / "sipp.out", cwd=workdir)

    def ports(self, timeout: float = 10.0) -> dict[str, int]:
        """{label: answered media port} once SIPp has the 200 OK (it writes them after its ACK)."""
        ports_file = self.workdir / "ports.txt"
        deadline = time.monotonic() + timeout
        while not ports_file.exists():
            assert self.proc.poll() is None, f"sipp exited {self.proc.returncode} before the call was set up"
            assert time.monotonic() < deadline, f"sipp did not get a 200 OK within {timeout} s"
            time.sleep(0.01)
        port_1, port_2 = (int(p) for p in ports_file.read_text().split())
        return {"1": port_1, "2": port_2}

    def wait(self) -> None:
        """Waits for SIPp's BYE and its 200 OK; SIPp must exit 0 (every expected message seen)."""
        rc = self.proc.wait(self.call_ms / 1000 + 20)
        assert rc == 0, f"sipp exit {rc}\n{(self.workdir / 'sipp.out').read_text(errors='replace')[-3000:]}"
