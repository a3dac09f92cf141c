"""Helpers for outbox tests: a burst-sent SIPREC call, taking the local sink's uplink down and back, waiting for
a metric."""

from __future__ import annotations

import time
from pathlib import Path

from . import metrics
from .airlock import Airlock
from .calls import SiprecCall


def record_burst(inst: Airlock, payloads: dict[str, bytes]) -> None:
    """One SIPREC call whose RTP is sent as one burst per stream, then BYE."""
    call = SiprecCall(inst.sip, list(payloads)).start()
    try:
        call.send_burst(payloads, ssrc_base=0x0B0C)
        assert call.bye().status == 200
    finally:
        call.close()


def take_uplink_down(inst: Airlock) -> Path:
    """Moves `uplink/` aside and puts a plain file in its place: the local sink can write nothing."""
    aside = inst.data_dir / "uplink.aside"
    if inst.uplink.exists():
        inst.uplink.rename(aside)
    else:
        aside.mkdir()
    inst.uplink.write_text("the uplink is down\n")
    return aside


def bring_uplink_back(inst: Airlock, aside: Path) -> None:
    inst.uplink.unlink()
    aside.rename(inst.uplink)


def wait_metric(inst: Airlock, name: str, predicate, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = metrics.value(metrics.parse(inst.metrics_text()), name)
        if value is not None and predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{name} = {value} after {timeout} s")
