"""Loopback port picking and child-process lifecycle for the system tests."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from pathlib import Path

_used_ranges: set[int] = set()


# Ports handed out go below the kernel's ephemeral range (32768-60999), so sockets bound to port 0 elsewhere
# (our own RTP/SIP clients, other programs on the machine) cannot take them between the pick and the bind:
# single ports from 5000-9999, media ranges from 10000-31999, SIPp's media pair from 32000-32767.
_handed_out: set[int] = set()


def _bindable(port: int, tcp: bool, udp: bool) -> bool:
    kinds = ([socket.SOCK_STREAM] if tcp else []) + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_port(tcp_and_udp: bool = True) -> int:
    """A loopback port free for TCP and (if asked) UDP at the same number."""
    for _ in range(500):
        port = random.randrange(5000, 10000)
        if port not in _handed_out and _bindable(port, True, tcp_and_udp):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port")


def free_udp_port() -> int:
    for _ in range(500):
        port = random.randrange(5000, 10000)
        if port not in _handed_out and _bindable(port, False, True):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback UDP port")


def free_udp_pair() -> int:
    """An even UDP port p with p and p+2 free (SIPp's -mp binds its audio port and audio port + 2)."""
    for _ in range(200):
        port = random.randrange(32000, 32760, 2)
        socks = []
        try:
            for p in (port, port + 1, port + 2, port + 3):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(u)
                u.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for u in socks:
                u.close()
    raise RuntimeError("no free UDP port pair")


def free_port_range(size: int = 100) -> tuple[int, int]:
    """An even-aligned UDP port range below the kernel's ephemeral range (32768+) with every port free now.
    Ranges not handed out before in this session are preferred; once most have been (a long session starts
    hundreds of appliances), any range whose ports are all free now is taken again."""
    for attempt in range(400):
        base = random.randrange(10000, 32000 - size, 100)  # even, below the ephemeral range
        if base in _used_ranges and attempt < 200:
            continue
        ok = True
        for port in range(base, base + size):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                ok = False
                break
            finally:
                u.close()
        if ok:
            _used_ranges.add(base)
            return base, base + size - 1
    raise RuntimeError("no free port range")


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} did not open within {timeout}s")


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM, wait `grace`, then SIGKILL. Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no {path}>"
    return "\n".join(text.splitlines()[-lines:])


class ProcessRegistry:
    """Keeps every process a test started so teardown can stop them, and their logs for failure reports."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, Path | None]] = []

    def start(self, name: str, argv: list[str], log: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log, "wb") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw)
        finally:
            if log:
                out.close()
        self.procs.append((name, proc, log))
        return proc

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.procs):
            stop_process(proc, 3)

    def report(self) -> str:
        out = []
        for name, proc, log in self.procs:
            out.append(f"----- {name} (pid {proc.pid}, exit {proc.poll()}) -----")
            if log:
                out.append(tail(log))
        return "\n".join(out)
