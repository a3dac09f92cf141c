"""Five9 VoiceStream over gRPC: legs of one vcc_call_id recorded as one call with a sample-exact channel per leg;
the config-first rule, trust tokens (config field and `x-five9-trust-token` header), hold/resume as a pause,
vanished and silent clients, drain on SIGTERM (1011), 50 concurrent calls, a late leg, health + reflection, TLS,
check-config rules and metrics. The client is harness/voicestream.py (stubs generated from the project's
voice.proto at test time)."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time
import uuid
from array import array
from pathlib import Path

import grpc
import pytest

from harness import audio, metrics, procs, voicestream
from harness.airlock import Airlock, airlock_binary
from harness.tls import Pki
from harness.voicestream import LegClient, LegConfig

LINGER_S = 2
MARGIN_S = 6


# --- fixtures and helpers -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pcm_a(speech_dir) -> array:
    """About 3 s of 8 kHz LINEAR16 speech (customer)."""
    return audio.speech_pcm16("Hello, I am calling about my invoice from last month.", speech_dir, "pcm-a")


@pytest.fixture(scope="session")
def pcm_b(speech_dir) -> array:
    """About 3 s of 8 kHz LINEAR16 speech (agent), different from pcm_a."""
    return audio.speech_pcm16("Thank you for calling, let me look that up for you.", speech_dir, "pcm-b",
                              voice="en-us", speed=190)


@pytest.fixture(scope="session")
def pcm_c(speech_dir) -> array:
    """About 2 s of 8 kHz LINEAR16 speech (supervisor)."""
    return audio.speech_pcm16("Supervisor joining to assist.", speech_dir, "pcm-c", speed=160)


def start_vs(airlock_factory, *, tokens: dict | None = None, **section) -> Airlock:
    """Airlock with a VoiceStream listener on loopback (plaintext unless the test passes TLS settings)."""
    port = procs.free_port(tcp_and_udp=False)
    vs = {"listen": f"127.0.0.1:{port}", "insecure_plaintext": True, "idle_timeout_secs": 30,
          "leg_linger_secs": LINGER_S}
    vs.update(section)
    inst = airlock_factory(overrides={"voicestream": vs,
                                      "voicestream.trust_tokens": tokens or {"sub-1": ["token-1"]}})
    inst.start()
    try:
        procs.wait_tcp(port, 10, inst.proc)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- airlock log ---\n{procs.tail(inst.log)}") from None
    inst.vs_target = f"127.0.0.1:{port}"
    return inst


def new_call_id() -> str:
    """A Five9-looking vcc_call_id (15 decimal digits), unique per test."""
    return str(random.randrange(300000000000000, 399999999999999))


def leg_config(call_id: str, leg: str, **kw) -> LegConfig:
    return LegConfig(vcc_call_id=call_id, call_leg=leg, **kw)


def private_values(call_id: str) -> dict:
    """Distinctive per-call values for the fields airlock must seal."""
    tag = uuid.uuid4().hex[:10]
    return {"domain_id": f"DomAcme{tag}", "campaign_id": f"SpringCampaign{tag}", "agent_id": f"jdoe.{tag}@acme",
            "skill_id": f"SkillBilling{tag}"}


def run_legs(clients: list[LegClient], timeout: float = 30.0) -> dict[str, voicestream.LegReport]:
    for c in clients:
        c.start()
    try:
        return {c.config.call_leg: c.join(timeout) for c in clients}
    finally:
        for c in clients:
            c.cancel()


def assert_streamed_ok(report: voicestream.LegReport) -> None:
    assert report.error is None, report.describe()
    assert report.codes and report.codes[0] == voicestream.SRV_REQ_START_STREAMING, \
        f"first response must be SRV_REQ_START_STREAMING (1001): {report.describe()}"
    assert report.grpc_code == grpc.StatusCode.OK, report.describe()
    assert len(report.sent) > 0, report.describe()


def vs_manifest_checks(inst: Airlock, call_dir: Path, legs: list[str]) -> dict:
    """The manifest of a VoiceStream call: source, one stream per leg labelled with its role, the recording's
    size/hash/format, an event line. Returns the manifest."""
    manifest = inst.manifest(call_dir)
    assert manifest.get("source") == "voicestream", f"source: {manifest.get('source')!r}"
    for key in ("call", "streams", "recording", "end_reason"):
        assert manifest.get(key) not in (None, "", []), f"manifest lacks {key}: {manifest}"
    rec = manifest["recording"]
    for key in ("file", "sha256", "bytes", "sample_rate", "channels"):
        assert key in rec, f"manifest.recording lacks {key}: {rec}"
    blob = (call_dir / Path(rec["file"]).name).read_bytes()
    assert rec["bytes"] == len(blob) and rec["sha256"].lower() == hashlib.sha256(blob).hexdigest(), rec
    # a channel per role: 2 (agent, customer) by default, 3 with `channels = 3`
    assert rec["sample_rate"] == 8000 and rec["channels"] == max(2, len(legs)), rec
    labels = sorted(str(s["label"]) for s in manifest["streams"])
    assert labels == sorted(legs), f"stream labels {labels}, expected one per leg {sorted(legs)}"
    chans = [s["channel"] for s in manifest["streams"]]
    role_channel = {"agent": 0, "customer": 1, "supervisor": 2}
    assert all(role_channel[s["label"]] == s["channel"] for s in manifest["streams"]), f"channels {chans}"
    names = {str(manifest["call"]), call_dir.name}
    assert any(any(n in json.dumps(e) for n in names) for e in inst.events()), "no event mentions the call"
    return manifest


def channels_by_leg(inst: Airlock, call_dir: Path, manifest: dict, n: int) -> dict[str, array]:
    wav = inst.recording(call_dir)
    assert (wav.sample_rate, wav.channels) == (8000, max(2, n)), (wav.sample_rate, wav.channels)
    return {str(s["label"]): wav.channel(s["channel"]) for s in manifest["streams"]}


def assert_sealed(inst: Airlock, call_dir: Path, values: list[str]) -> None:
    text = (call_dir / "manifest.json").read_text()
    events = (inst.uplink / "events.jsonl").read_text() if (inst.uplink / "events.jsonl").is_file() else ""
    for v in values:
        assert v not in text, f"manifest shows {v!r} in clear"
        assert v not in events, f"events.jsonl shows {v!r} in clear"
    sealed = json.loads(text).get("metadata_sealed")
    assert sealed, "manifest has no metadata_sealed entries"
    blob = json.dumps(sealed)
    assert "AGE ENCRYPTED" in blob or "age-encryption.org" in blob, f"metadata_sealed is not age-armored: {blob[:200]}"


def metric(inst: Airlock, name: str) -> float:
    return metrics.value(metrics.parse(inst.metrics_text()), name)


def assert_nothing_recorded(inst: Airlock, wait: float = LINGER_S + 1.5) -> None:
    time.sleep(wait)
    assert inst.finished_calls() == [], f"unexpected recordings: {inst.finished_calls()}"
    active = inst.data_dir / "active"
    assert not active.is_dir() or not any(active.iterdir()), f"active/ holds {list(active.iterdir())}"


# --- tests --------------------------------------------------------------------------------------------------------
def test_two_legs_become_one_call_with_exact_channels(airlock_factory, vs_stubs, pcm_a, pcm_b):
    inst = start_vs(airlock_factory)
    call_id = new_call_id()
    private = private_values(call_id)
    reports = run_legs([
        LegClient(inst.vs_target, leg_config(call_id, "customer", **private), pcm_a, end="half_close"),
        LegClient(inst.vs_target, leg_config(call_id, "agent", **private), pcm_b, end="ended"),
    ])
    for r in reports.values():
        assert_streamed_ok(r)
    assert reports["agent"].statuses_sent == [voicestream.CLT_CALL_ENDED]

    [call_dir] = inst.wait_calls(1, timeout=LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    assert manifest["end_reason"] == "streams_ended", manifest["end_reason"]
    chans = channels_by_leg(inst, call_dir, manifest, 2)
    for leg, r in reports.items():
        audio.assert_exact_run(chans[leg], r.sent, leg)
    assert_sealed(inst, call_dir, [call_id, *private.values(), "token-1"])
    assert metric(inst, "airlock_voicestream_streams_total") >= 2
    assert "token-1" not in inst.log.read_text(errors="replace"), "the trust token is in airlock's log"


def test_three_legs_any_end_event_and_chunk_size(airlock_factory, vs_stubs, pcm_a, pcm_b, pcm_c):
    """Supervisor leg too; legs end with CLT_DISCONNECT, the undocumented 2001 and a bare half-close; chunks of
    20, 100 and 250 ms. With `channels = 3` the supervisor gets its own channel."""
    inst = start_vs(airlock_factory, channels=3)
    call_id = new_call_id()
    reports = run_legs([
        LegClient(inst.vs_target, leg_config(call_id, "customer"), pcm_a, end="2001", chunk_bytes=320),
        LegClient(inst.vs_target, leg_config(call_id, "agent"), pcm_b, end="disconnect"),
        LegClient(inst.vs_target, leg_config(call_id, "supervisor"), pcm_c, end="half_close", chunk_bytes=4000,
                  start_delay=0.3),
    ])
    for r in reports.values():
        assert_streamed_ok(r)
    [call_dir] = inst.wait_calls(1, timeout=LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer", "supervisor"])
    assert manifest["end_reason"] == "streams_ended", manifest["end_reason"]
    chans = channels_by_leg(inst, call_dir, manifest, 3)
    for leg, r in reports.items():
        audio.assert_exact_run(chans[leg], r.sent, leg)


def test_audio_before_config_is_invalid_argument(airlock_factory, vs_stubs, pcm_a):
    inst = start_vs(airlock_factory)
    [r] = run_legs([LegClient(inst.vs_target, leg_config(new_call_id(), "customer"), pcm_a[:8000],
                              audio_before_config=True)]).values()
    assert r.grpc_code == grpc.StatusCode.INVALID_ARGUMENT, r.describe()
    assert set(r.codes) <= {voicestream.SRV_ERROR_GENERIC}, f"only 1102 may precede the error: {r.describe()}"
    assert inst.alive()
    assert_nothing_recorded(inst)


def test_trust_tokens(airlock_factory, vs_stubs, pcm_a):
    """A wrong token and an unknown subscription get UNAUTHENTICATED, are counted, and record nothing; the right
    token only in the x-five9-trust-token header (empty config field) is accepted."""
    inst = start_vs(airlock_factory, tokens={"sub-1": ["token-1"], "sub-2": ["token-2a", "token-2b"]})
    bad = [leg_config(new_call_id(), "customer", trust_token="token-2a"),  # another subscription's token
           leg_config(new_call_id(), "customer", subscription_id="sub-9", trust_token="token-1"),
           leg_config(new_call_id(), "agent", trust_token="")]
    clients = [LegClient(inst.vs_target, cfg, pcm_a[:8000], wait_start=5) for cfg in bad]
    for c in clients:
        c.start()
    for c in clients:
        r = c.join(15)
        assert r.grpc_code == grpc.StatusCode.UNAUTHENTICATED, r.describe()
        assert voicestream.SRV_REQ_START_STREAMING not in r.codes, r.describe()
        assert len(r.sent) == 0, r.describe()
    assert metric(inst, "airlock_voicestream_auth_failures_total") >= 1
    assert_nothing_recorded(inst)

    call_id = new_call_id()
    [ok] = run_legs([LegClient(inst.vs_target, leg_config(call_id, "customer", subscription_id="sub-2",
                                                          trust_token="", header_token="token-2b"),
                               pcm_a)]).values()
    assert_streamed_ok(ok)
    [call_dir] = inst.wait_calls(1, timeout=LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["customer"])
    audio.assert_exact_run(channels_by_leg(inst, call_dir, manifest, 1)["customer"], ok.sent, "customer")


def test_hold_and_resume_is_a_pause(airlock_factory, vs_stubs, pcm_a, pcm_b):
    inst = start_vs(airlock_factory)
    call_id = new_call_id()
    hold_at, hold_s = 15, 1.5
    reports = run_legs([
        LegClient(inst.vs_target, leg_config(call_id, "customer"), pcm_a, hold=(hold_at, hold_s)),
        LegClient(inst.vs_target, leg_config(call_id, "agent"), pcm_b),
    ])
    for r in reports.values():
        assert_streamed_ok(r)
    cust = reports["customer"]
    assert cust.statuses_sent[:2] == [voicestream.CLT_CALL_HOLD, voicestream.CLT_CALL_RESUME], cust.describe()

    [call_dir] = inst.wait_calls(1, timeout=LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    pauses = [p for p in manifest.get("pauses") or [] if str(p.get("label")) == "customer"]
    assert pauses, f"no pause for the customer leg: {manifest.get('pauses')}"
    p = pauses[0]
    assert p["start_ms"] < p["end_ms"], p
    assert hold_s * 1000 * 0.5 <= p["end_ms"] - p["start_ms"] <= hold_s * 1000 + 1500, p
    assert not [q for q in manifest.get("pauses") or [] if str(q.get("label")) == "agent"], manifest["pauses"]

    chans = channels_by_leg(inst, call_dir, manifest, 2)
    audio.assert_exact_run(chans["agent"], reports["agent"].sent, "agent")
    cut = hold_at * voicestream.CHUNK_BYTES // 2
    before, after = cust.sent[:cut], cust.sent[cut:]
    ch = chans["customer"]
    off_a = audio.find_run(ch, before)
    assert off_a >= 0, f"customer audio before the hold: {audio.describe_mismatch(ch, before)}"
    off_b = audio.find_run(ch, after, off_a + len(before))
    assert off_b >= 0, f"customer audio after the resume: {audio.describe_mismatch(ch, after)}"
    bad = audio.nonzero_outside(ch, [(off_a, off_a + len(before)), (off_b, off_b + len(after))])
    assert not bad, f"customer: non-silent samples outside the sent audio at {bad}"


def test_vanished_clients_finalise_as_stream_lost(airlock_factory, vs_stubs, pcm_a, pcm_b):
    idle = 2
    inst = start_vs(airlock_factory, idle_timeout_secs=idle)
    call_id = new_call_id()
    reports = run_legs([
        LegClient(inst.vs_target, leg_config(call_id, "customer"), pcm_a, end="vanish", vanish_after=15),
        LegClient(inst.vs_target, leg_config(call_id, "agent"), pcm_b, end="vanish", vanish_after=12),
    ])
    for r in reports.values():
        assert r.codes[:1] == [voicestream.SRV_REQ_START_STREAMING], r.describe()
        assert r.grpc_code == grpc.StatusCode.CANCELLED, r.describe()
        assert not r.statuses_sent, r.describe()
    assert len(reports["customer"].sent) == 15 * 800 and len(reports["agent"].sent) == 12 * 800

    [call_dir] = inst.wait_calls(1, timeout=idle + LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    assert manifest["end_reason"] == "stream_lost", manifest["end_reason"]
    chans = channels_by_leg(inst, call_dir, manifest, 2)
    for leg, r in reports.items():
        audio.assert_exact_run(chans[leg], r.sent, leg)
    assert inst.alive()


def test_silent_legs_are_lost_after_idle_timeout(airlock_factory, vs_stubs, pcm_a, pcm_b):
    """Both legs stop sending but keep their streams open: after idle_timeout_secs they are lost."""
    idle = 2
    inst = start_vs(airlock_factory, idle_timeout_secs=idle)
    call_id = new_call_id()
    clients = [LegClient(inst.vs_target, leg_config(call_id, "customer"), pcm_a[:16000], end="stall"),
               LegClient(inst.vs_target, leg_config(call_id, "agent"), pcm_b[:16000], end="stall")]
    for c in clients:
        c.start()
    try:
        [call_dir] = inst.wait_calls(1, timeout=2 + idle + LINGER_S + MARGIN_S)
    finally:
        for c in clients:
            c.cancel()
    reports = {c.config.call_leg: c.join(10) for c in clients}
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    assert manifest["end_reason"] == "stream_lost", manifest["end_reason"]
    chans = channels_by_leg(inst, call_dir, manifest, 2)
    for leg, r in reports.items():
        assert len(r.sent) == 16000, r.describe()
        audio.assert_exact_run(chans[leg], r.sent, leg)


def test_sigterm_drains_streams_with_1011(airlock_factory, vs_stubs, pcm_a, pcm_b):
    inst = start_vs(airlock_factory)
    call_id = new_call_id()
    long_a, long_b = pcm_a + pcm_b, pcm_b + pcm_a  # ~6 s, more than we let play
    clients = [LegClient(inst.vs_target, leg_config(call_id, "customer"), long_a),
               LegClient(inst.vs_target, leg_config(call_id, "agent"), long_b)]
    for c in clients:
        c.start()
    try:
        time.sleep(1.5)
        assert all(c.chunks_sent > 5 for c in clients), [c.chunks_sent for c in clients]
        code = inst.terminate()
        reports = {c.config.call_leg: c.join(10) for c in clients}
    finally:
        for c in clients:
            c.cancel()
    assert code == 0, f"airlock exited {code}\n{procs.tail(inst.log)}"
    for r in reports.values():
        assert voicestream.SRV_REQ_DISCONNECT in r.codes, f"no SRV_REQ_DISCONNECT (1011): {r.describe()}"
        assert r.chunks_sent < len(voicestream.chunks(long_a)), f"the stream was not ended early: {r.describe()}"

    [call_dir] = inst.wait_calls(1, timeout=5)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    assert manifest["end_reason"] == "shutdown", manifest["end_reason"]
    chans = channels_by_leg(inst, call_dir, manifest, 2)
    for leg, r in reports.items():
        offset, n = audio.longest_prefix_run(chans[leg], r.sent)
        assert offset >= 0, f"{leg}: {audio.describe_mismatch(chans[leg], r.sent)}"
        assert n >= len(r.sent) - int(0.3 * 8000), f"{leg}: recorded {n} of the {len(r.sent)} samples sent"
        bad = audio.nonzero_outside(chans[leg], [(offset, offset + n)])
        assert not bad, f"{leg}: non-silent samples outside the sent audio at {bad}"


def test_fifty_concurrent_calls(airlock_factory, vs_stubs, pcm_a, pcm_b):
    """50 calls x 2 legs streamed at once in real time over 10 shared connections; every channel exact."""
    n_calls = 50
    inst = start_vs(airlock_factory)
    chans = [voicestream.channel(inst.vs_target) for _ in range(10)]
    clients: list[tuple[str, LegClient]] = []
    try:
        for i in range(n_calls):
            call_id = new_call_id()
            # Each call gets its own audio (the speech rotated by i x 20 ms) so recordings cannot be confused.
            k = i * 160
            a, b = pcm_a[k:] + pcm_a[:k], pcm_b[k:] + pcm_b[:k]
            for leg, pcm in (("customer", a), ("agent", b)):
                clients.append((call_id, LegClient(inst.vs_target, leg_config(call_id, leg), pcm,
                                                   chan=chans[len(clients) % len(chans)],
                                                   start_delay=random.uniform(0, 1.0), wait_start=15)))
        for _, c in clients:
            c.start()
        reports: dict[str, dict[str, voicestream.LegReport]] = {}
        for call_id, c in clients:
            reports.setdefault(call_id, {})[c.config.call_leg] = c.join(40)
    finally:
        for _, c in clients:
            c.cancel()
        for ch in chans:
            ch.close()
    for legs in reports.values():
        for r in legs.values():
            assert_streamed_ok(r)

    call_dirs = inst.wait_calls(n_calls, timeout=LINGER_S + 20)
    assert len(call_dirs) == n_calls, f"{len(call_dirs)} calls recorded, expected {n_calls}"
    unmatched = dict(reports)
    for call_dir in call_dirs:
        manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
        by_leg = channels_by_leg(inst, call_dir, manifest, 2)
        match = [cid for cid, legs in unmatched.items() if audio.find_run(by_leg["customer"],
                                                                           legs["customer"].sent) >= 0]
        assert len(match) == 1, f"{call_dir.name}: customer channel matches {len(match)} sent calls"
        legs = unmatched.pop(match[0])
        for leg, r in legs.items():
            audio.assert_exact_run(by_leg[leg], r.sent, f"{call_dir.name} {leg}")
    assert not unmatched
    assert metric(inst, "airlock_voicestream_streams_total") >= 2 * n_calls


def test_late_agent_leg_lands_one_second_in(airlock_factory, vs_stubs, pcm_a, pcm_b):
    inst = start_vs(airlock_factory)
    call_id = new_call_id()
    reports = run_legs([
        LegClient(inst.vs_target, leg_config(call_id, "customer"), pcm_a),
        LegClient(inst.vs_target, leg_config(call_id, "agent"), pcm_b, start_delay=1.0),
    ])
    for r in reports.values():
        assert_streamed_ok(r)
    late = reports["agent"].started - reports["customer"].started
    assert 0.9 <= late <= 1.6, f"the agent leg started {late:.2f}s after the customer"

    [call_dir] = inst.wait_calls(1, timeout=LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    chans = channels_by_leg(inst, call_dir, manifest, 2)
    off_c = audio.assert_exact_run(chans["customer"], reports["customer"].sent, "customer")
    off_a = audio.assert_exact_run(chans["agent"], reports["agent"].sent, "agent")
    lag = (off_a - off_c) / 8000
    assert abs(lag - late) <= 0.25, f"agent audio lands {lag:.2f}s after the customer's; it started {late:.2f}s later"


def test_health_and_reflection(airlock_factory, vs_stubs):
    inst = start_vs(airlock_factory)
    with voicestream.channel(inst.vs_target) as chan:
        assert voicestream.health_check(chan, "") == "SERVING"
        services = voicestream.reflected_services(chan)
        assert "five9.voicestream.Voice" in services, services
        method = voicestream.reflected_method(chan, "five9.voicestream.Voice", "StreamingVoice")
        assert method.client_streaming and method.server_streaming
        assert method.input_type.full_name == "five9.voicestream.StreamingVoiceRequest"
        assert method.output_type.full_name == "five9.voicestream.StreamingVoiceResponse"


def test_tls_listener(airlock_factory, vs_stubs, tmp_path, pcm_a, pcm_b):
    """With a certificate and insecure_plaintext = false a TLS client (trusting the test CA, checking
    `localhost`) records a call; a plaintext client gets nowhere and records nothing."""
    pki = Pki(tmp_path / "pki")
    server = pki.server()
    inst = start_vs(airlock_factory, insecure_plaintext=False, certificate=str(server.cert),
                    private_key=str(server.key))
    ca = pki.ca.cert.read_bytes()

    [plain] = run_legs([LegClient(inst.vs_target, leg_config(new_call_id(), "customer"), pcm_a[:8000],
                                  wait_start=5, rpc_timeout=8)]).values()
    assert plain.grpc_code not in (None, grpc.StatusCode.OK), plain.describe()
    assert voicestream.SRV_REQ_START_STREAMING not in plain.codes and len(plain.sent) == 0, plain.describe()

    rogue = pki.rogue_ca.cert.read_bytes()
    [untrusted] = run_legs([LegClient(inst.vs_target, leg_config(new_call_id(), "customer"), pcm_a[:8000],
                                      root_ca=rogue, wait_start=5, rpc_timeout=8)]).values()
    assert untrusted.grpc_code == grpc.StatusCode.UNAVAILABLE and len(untrusted.sent) == 0, untrusted.describe()

    call_id = new_call_id()
    reports = run_legs([
        LegClient(inst.vs_target, leg_config(call_id, "customer"), pcm_a, root_ca=ca),
        LegClient(inst.vs_target, leg_config(call_id, "agent"), pcm_b, root_ca=ca),
    ])
    for r in reports.values():
        assert_streamed_ok(r)
    [call_dir] = inst.wait_calls(1, timeout=LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    chans = channels_by_leg(inst, call_dir, manifest, 2)
    for leg, r in reports.items():
        audio.assert_exact_run(chans[leg], r.sent, leg)


@pytest.mark.parametrize("section,key", [
    ('listen = "0.0.0.0:50051"\ninsecure_plaintext = true\n', "insecure_plaintext"),
    ('listen = "127.0.0.1:50051"\ninsecure_plaintext = false\n', "certificate"),
])
def test_check_config_voicestream_rules(tmp_path, section, key):
    """Plaintext only on loopback; TLS needs a certificate."""
    path = tmp_path / "airlock.toml"
    path.write_text("[voicestream]\n" + section)
    proc = subprocess.run([str(airlock_binary()), "check-config", str(path)], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert key in proc.stdout + proc.stderr, f"message does not name `{key}`: {proc.stdout}{proc.stderr}"


# --- webhooks -----------------------------------------------------------------------------------------------------
def webhook(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            context=None) -> tuple[int, object]:
    """One request to airlock's webhook listener: (status, decoded JSON body)."""
    import urllib.error
    import urllib.request

    scheme = "https" if context else "http"
    request = urllib.request.Request(f"{scheme}://localhost:{port}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def unseal(inst: Airlock, armored: str) -> str:
    """Decrypts one sealed manifest entry with the recipient's identity (Debian age)."""
    return subprocess.run([audio.require_tool("age"), "-d", "-i", str(inst.identity)], input=armored.encode(),
                          capture_output=True, check=True).stdout.decode()


def test_webhooks_verify_authenticate_and_land_in_the_call(airlock_factory, vs_stubs, tmp_path, pcm_a, pcm_b):
    pki = Pki(tmp_path / "pki")
    server = pki.server()
    hook_port = procs.free_port(tcp_and_udp=False)
    port = procs.free_port(tcp_and_udp=False)
    inst = airlock_factory(overrides={
        "voicestream": {"listen": f"127.0.0.1:{port}", "insecure_plaintext": True, "leg_linger_secs": LINGER_S},
        "voicestream.trust_tokens": {"sub-1": ["token-1"]},
        "voicestream.webhooks": {"listen": f"127.0.0.1:{hook_port}", "certificate": str(server.cert),
                                 "private_key": str(server.key), "trust_token": "cti-trust-token",
                                 "api_keys": ["key-1"]},
    })
    inst.start()
    procs.wait_tcp(port, 10, inst.proc)
    procs.wait_tcp(hook_port, 10, inst.proc)
    inst.vs_target = f"127.0.0.1:{port}"
    tls = pki.client_context()

    # Five9's verification: the SHA-256 hex of the trust token, as a JSON string
    assert webhook(hook_port, "GET", "/cti", context=tls) == (200, hashlib.sha256(b"cti-trust-token").hexdigest())
    assert webhook(hook_port, "GET", "/subscriptions/sub-1", context=tls)[0] == 200

    call_id = new_call_id()
    cti = {"eventType": "CALL_START", "payload": {"attached_variables": {
        "Call.call_id": call_id, "Call.ANI": "+15551230077", "Call.DNIS": "+18005550100",
        "Call.disposition_name": "Resolved"}}}
    body = json.dumps(cti).encode()
    assert webhook(hook_port, "POST", "/cti", body, context=tls)[0] == 401, "no API key"
    assert webhook(hook_port, "POST", "/cti", body, {"x-api-key": "wrong"}, tls)[0] == 401
    status, reply = webhook(hook_port, "POST", "/cti", b'{"payload": ', {"X-F9-APIKEY": "key-1"}, tls)
    assert status == 400 and "malformed JSON" in reply["error"], reply
    status, reply = webhook(hook_port, "POST", "/cti", b'{"payload": {}}', {"x-api-key": "key-1"}, tls)
    assert status == 400 and "Call.call_id" in reply["error"], reply
    # the CTI event comes before the streams: it waits for the call
    assert webhook(hook_port, "POST", "/cti", body, {"X-F9-APIKEY": "key-1"}, tls) == \
        (200, {"accepted": True, "call_open": False})

    clients = [LegClient(inst.vs_target, leg_config(call_id, "customer"), pcm_a, end="ended"),
               LegClient(inst.vs_target, leg_config(call_id, "agent"), pcm_b, end="ended")]
    for c in clients:
        c.start()
    time.sleep(1.0)
    stream_status = {"callId": call_id, "callLeg": "Agent", "status": "STREAMING",
                     "occurredOn": "2026-11-29T09:00:00.000Z"}
    assert webhook(hook_port, "POST", "/subscriptions/sub-1", json.dumps(stream_status).encode(),
                   {"x-api-key": "key-1"}, tls) == (200, {"accepted": True, "call_open": True})
    for c in clients:
        assert_streamed_ok(c.join(30))

    [call_dir] = inst.wait_calls(1, timeout=LINGER_S + MARGIN_S)
    manifest = vs_manifest_checks(inst, call_dir, ["agent", "customer"])
    assert_sealed(inst, call_dir, [call_id, "+15551230077", "+18005550100", "Resolved"])
    notes = [json.loads(unseal(inst, sealed)) for sealed in manifest["metadata_sealed"]]
    kinds = [note.get("kind") for note in notes]
    assert kinds.count("cti_event") == 1 and kinds.count("stream_status") == 1, kinds
    cti_note = next(note for note in notes if note.get("kind") == "cti_event")
    assert cti_note["event"]["payload"]["attached_variables"]["Call.ANI"] == "+15551230077"
    assert metric(inst, 'airlock_voicestream_webhook_requests_total{result="unauthorised"}') == 2
    assert metric(inst, 'airlock_voicestream_webhook_requests_total{result="malformed"}') == 2
    log = inst.log.read_text(errors="replace")
    assert "+15551230077" not in log and "key-1" not in log and "cti-trust-token" not in log
