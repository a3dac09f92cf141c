"""Airlock as image/airlock.service runs it (docs/SERVICE.md).

1. systemd's notify protocol: with NOTIFY_SOCKET (a unix datagram socket the test binds, as a path and in the
   abstract namespace) and WATCHDOG_USEC set, airlock sends READY=1 once its SIP port answers, STATUS lines without
   personal data, WATCHDOG=1 at half the watchdog timeout, and STOPPING=1 on SIGTERM. (That keep-alives stop when
   the control loop stops answering is a unit test: airlock-runtime's supervision module.)
2. MemoryDenyWriteExecute=yes: a call is transcribed (whisper.cpp, OpenBLAS, ONNX Runtime for the VAD) by an
   airlock that the kernel forbids writable+executable memory (PR_SET_MDWE, inherited across exec)."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import sys
import threading
import time

import pytest

import test_transcription as transcription
from harness import procs
from harness.airlock import airlock_binary
from harness.calls import SiprecCall

WATCHDOG_USEC = 2_000_000
KEEPALIVE_S = WATCHDOG_USEC / 1e6 / 2


class NotifyListener:
    """The service manager's end: collects (monotonic time, {KEY: VALUE}) per datagram."""

    def __init__(self, address: str, sip_port_fn) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        # Whether the SIP port accepted a TCP connection at the moment READY=1 arrived.
        self.sip_answered_at_ready: bool | None = None
        self._sip_port_fn = sip_port_fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            if fields.get("READY") == "1" and self.sip_answered_at_ready is None:
                try:
                    socket.create_connection(("127.0.0.1", self._sip_port_fn()), timeout=1).close()
                    self.sip_answered_at_ready = True
                except OSError:
                    self.sip_answered_at_ready = False
            self.messages.append((time.monotonic(), fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def times(self, key: str, value: str = "1") -> list[float]:
        return [t for t, fields in self.messages if fields.get(key) == value]

    def statuses(self) -> list[str]:
        return [fields["STATUS"] for _, fields in self.messages if "STATUS" in fields]

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout}s; got {[f for _, f in self.messages]}")


@pytest.mark.parametrize("namespace", ["path", "abstract"])
def test_ready_status_watchdog_and_stopping(airlock_factory, tmp_path, monkeypatch, namespace):
    inst = airlock_factory()
    if namespace == "path":
        bind_to = str(tmp_path / "notify.sock")
        notify_socket = bind_to
    else:
        name = f"airlock-test-{os.getpid()}-{time.monotonic_ns()}"
        bind_to = "\0" + name
        notify_socket = "@" + name
    listener = NotifyListener(bind_to, lambda: inst.sip_port)
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        inst.start()
        listener.wait_for(lambda: listener.times("READY"), 10, "READY=1")
        assert len(listener.times("READY")) == 1
        assert listener.sip_answered_at_ready, "READY=1 arrived before the SIP port answered"
        ready_at = listener.times("READY")[0]

        # A call shows in the status line as a count, never as an id, a URI or an address.
        call = SiprecCall(inst.sip, ["1", "2"]).start()
        listener.wait_for(lambda: any("1 active call" in s for s in listener.statuses()), 5, "'1 active call' status")
        assert call.bye().status == 200
        listener.wait_for(lambda: listener.statuses()[-1].startswith("recording; 0 active calls"), 10,
                          "'0 active calls' status after BYE")

        listener.wait_for(lambda: len(listener.times("WATCHDOG")) >= 4, 4 * KEEPALIVE_S + 3, "four keep-alives")
        keepalives = [t for t in listener.times("WATCHDOG") if t >= ready_at]
        gaps = [b - a for a, b in zip(keepalives, keepalives[1:])]
        assert gaps and all(0.5 * KEEPALIVE_S <= g <= 1.6 * KEEPALIVE_S for g in gaps), \
            f"keep-alives every {KEEPALIVE_S}s expected, gaps {gaps}"

        inst.proc.send_signal(signal.SIGTERM)
        listener.wait_for(lambda: listener.times("STOPPING"), 5, "STOPPING=1")
        assert inst.proc.wait(inst.config["shutdown"]["grace_secs"] + 10) == 0
    finally:
        listener.close()

    statuses = listener.statuses()
    assert statuses[0].startswith("recording;"), statuses
    assert any(s.startswith("stopping") for s in statuses), statuses
    for status in statuses:
        assert not re.search(r"\d+\.\d+\.\d+\.\d+|sip:|@|\b\d{5,}\b", status), f"personal data in STATUS: {status}"
    log = inst.log.read_text(errors="replace")
    assert "liveness probe" not in log, procs.tail(inst.log)


PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1


def test_transcribes_without_writable_executable_memory(airlock_factory, tmp_path, monkeypatch):
    if ctypes.CDLL(None, use_errno=True).prctl(PR_GET_MDWE, 0, 0, 0, 0) < 0:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    wrapper = tmp_path / "airlock-mdwe"
    wrapper.write_text(f"""#!{sys.executable}
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed: errno {{ctypes.get_errno()}}")
os.execv({str(airlock_binary())!r}, ["airlock"] + sys.argv[1:])
""")
    wrapper.chmod(0o755)
    monkeypatch.setenv("AIRLOCK_BIN", str(wrapper))
    transcription.test_siprec_call_is_transcribed_per_speaker(airlock_factory, tmp_path)
