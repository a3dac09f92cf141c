"""RTP inactivity: a call whose (unpaused) streams stop sending RTP is ended by Airlock with a BYE and the
reason `rtp_timeout`; a call paused by re-INVITE (a=inactive) is kept however long the pause lasts (R24)."""

from __future__ import annotations

import time

from harness.airlock import check_manifest
from harness.calls import SiprecCall

TIMEOUT_S = 2


def inactivity_airlock(airlock_factory):
    return airlock_factory(overrides={"media": {"inactivity_timeout_secs": TIMEOUT_S}}).start()


def test_silent_call_is_ended_with_bye_and_reason(airlock_factory, speech_a):
    airlock = inactivity_airlock(airlock_factory)
    call = SiprecCall(airlock.sip, ["1", "2"]).start()
    try:
        senders = [call.sender(label, speech_a[: 8000 // 2]) for label in ("1", "2")]  # 0.5 s each
        for s in senders:
            s.start()
        for s in senders:
            s.join(5)
        stopped = time.monotonic()
        bye = call.uac.wait_request("BYE", TIMEOUT_S + 5)
        waited = time.monotonic() - stopped
        assert bye is not None, f"no BYE from airlock {TIMEOUT_S + 5} s after RTP stopped"
        assert waited >= TIMEOUT_S - 0.3, f"BYE came {waited:.2f} s after RTP stopped, before the timeout"
    finally:
        call.close()
    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    assert manifest["end_reason"] == "rtp_timeout", manifest["end_reason"]
    check_manifest(airlock, call_dir, manifest)
    assert 'outcome="rtp_timeout"' in airlock.metrics_text()


def test_paused_call_outlives_the_inactivity_timeout(airlock_factory, speech_a):
    airlock = inactivity_airlock(airlock_factory)
    call = SiprecCall(airlock.sip, ["1", "2"]).start()
    try:
        call.reinvite("inactive")
        assert call.uac.wait_request("BYE", TIMEOUT_S * 2 + 1) is None, "airlock hung up on a paused call"
        call.reinvite("sendonly")
        sender = call.sender("1", speech_a[: 8000 // 2])
        sender.start()
        sender.join(5)
        assert call.bye().status == 200
    finally:
        call.close()
    [call_dir] = airlock.wait_calls(1)
    manifest = airlock.manifest(call_dir)
    assert manifest["end_reason"] == "remote_bye", manifest["end_reason"]
    assert manifest["pauses"], manifest
