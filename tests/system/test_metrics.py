"""(h) /metrics is valid Prometheus text (promtool), and the active-call gauge and RTP counters move."""

from __future__ import annotations

import time
import urllib.request

from harness import metrics
from harness.calls import SiprecCall

ACTIVE = "airlock_active_calls"
RTP_RECEIVED = "airlock_rtp_packets_received_total"


def wait_metric(inst, name: str, predicate, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = metrics.value(metrics.parse(inst.metrics_text()), name)
        if predicate(v) or time.monotonic() > deadline:
            return v
        time.sleep(0.1)


def test_metrics_valid_and_moving(airlock, speech_a):
    text = airlock.metrics_text()
    metrics.promtool_check(text)
    before = metrics.parse(text)
    assert ACTIVE in before, f"{ACTIVE} missing from /metrics:\n{text}"
    assert metrics.value(before, ACTIVE) == 0
    rtp_before = metrics.value(before, RTP_RECEIVED)

    call = SiprecCall(airlock.sip, ["1", "2"]).start()
    try:
        assert wait_metric(airlock, ACTIVE, lambda v: v == 1) == 1, "active-call gauge did not rise to 1"
        s = call.sender("1", speech_a[: 160 * 50])
        s.run()
        got = wait_metric(airlock, RTP_RECEIVED, lambda v: v >= rtp_before + s.report.packets)
        assert got >= rtp_before + s.report.packets, f"{RTP_RECEIVED} {rtp_before} -> {got}, sent {s.report.packets}"
        metrics.promtool_check(airlock.metrics_text())
        assert call.bye().status == 200
    finally:
        call.close()
    assert wait_metric(airlock, ACTIVE, lambda v: v == 0) == 0, "active-call gauge did not fall back to 0"
    airlock.wait_calls(1)
    metrics.promtool_check(airlock.metrics_text())


def test_metrics_content_type(airlock):
    with urllib.request.urlopen(f"http://127.0.0.1:{airlock.metrics_port}/metrics", timeout=5) as resp:
        ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("text/plain") or ctype.startswith("application/openmetrics-text"), ctype
