"""Pause and resume on request from an agent-desktop integration: a SIPREC call (named by its sipSessionID)
paused and resumed mid-call over the HTTPS control API (bearer token) and over MQTT commands (mosquitto with an
ACL), and a Five9 VoiceStream call named by its callId. The recording keeps its timeline with silence for the
paused span and audio elsewhere; the manifest lists the interval with reason `request` and the channel it came
through; bad requests get 401/404/400/405/413 (or an error outcome on MQTT)."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from array import array

from harness import g711, metrics
from harness.airlock import Airlock, check_manifest, stream_by_label, to_toml
from harness.calls import SiprecCall
from harness.mqtt import Broker, Subscriber
from harness.procs import free_port, wait_tcp
from harness.tls import Pki, peer_common_name
from harness.voicestream import LegClient, LegConfig

TOKEN = "pause-test-token-7f3a9c1e2b"
SITE = "test-site"
APPLIANCE = "airlock-7"
ROOT = f"airlock/v1/{SITE}/{APPLIANCE}"
BLOCK = 160  # 20 ms at 8 kHz
# How far the silenced span may be from the request instants and the manifest's interval: the request's
# round trip plus scheduling on a loaded 2-core machine.
EDGE_MS = 200


class RecordedCall(SiprecCall):
    """A SiprecCall that remembers the sipSessionID of its metadata: the id the contact centre knows."""

    session_id = ""

    def _body(self, direction: str):
        ctype, body = super()._body(direction)
        found = re.search(rb"<sipSessionID>([0-9a-f]+)</sipSessionID>", body)
        assert found, body
        self.session_id = found.group(1).decode()
        return ctype, body


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """A PCMU sine: every 20 ms block of it is loud, none is silent."""
    n = int(seconds * 8000) // BLOCK * BLOCK
    return g711.encode([int(amplitude * math.sin(2 * math.pi * hz * k / 8000)) for k in range(n)], "PCMU")


class ControlApi:
    def __init__(self, port: int, pki: Pki) -> None:
        self.base = f"https://localhost:{port}"
        self.context = pki.client_context()

    def call(self, method: str, path: str, token: str | None = TOKEN, body: bytes | None = None):
        """(status, JSON body) of one request."""
        request = urllib.request.Request(self.base + path, method=method, data=body)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def start_with_api(airlock_factory, tmp_path, **extra) -> tuple[Airlock, ControlApi, Pki]:
    pki = Pki(tmp_path / "pki")
    server = pki.server("control-api")
    token_file = tmp_path / "control-api-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port(tcp_and_udp=False)
    overrides = {"control_api": {"listen": f"127.0.0.1:{port}", "certificate": str(server.cert),
                                 "private_key": str(server.key), "token_file": str(token_file)}}
    overrides.update(extra)
    inst = airlock_factory(overrides=overrides).start()
    return inst, ControlApi(port, pki), pki


def record_with_pause(inst: Airlock, pause, resume, seconds: float = 7.0, pause_at: float = 2.0,
                      resume_at: float = 4.5) -> tuple[RecordedCall, dict]:
    """A two-stream call sending a tone throughout; `pause(call)` and `resume(call)` are called at the given
    seconds into the media. Returns the call and the monotonic instants (relative to the media start) at which
    the pause and resume requests were answered."""
    labels = ["1", "2"]
    call = RecordedCall(inst.sip, labels).start()
    marks = {}
    try:
        senders = [call.sender(label, tone(seconds, 440.0 + 110 * int(label))) for label in labels]
        for sender in senders:
            sender.start()
        started = time.monotonic()
        time.sleep(pause_at)
        before = time.monotonic() - started
        pause(call)
        marks["pause"] = (before, time.monotonic() - started)
        time.sleep(max(0.0, resume_at - (time.monotonic() - started)))
        before = time.monotonic() - started
        resume(call)
        marks["resume"] = (before, time.monotonic() - started)
        for sender in senders:
            sender.join(seconds + 5)
        assert call.bye().status == 200
    finally:
        call.close()
    return call, marks


def silent_runs(channel, first: int, last: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of the all-zero 20 ms blocks between `first` and `last`, merged."""
    runs: list[tuple[int, int]] = []
    for start in range(first, last, BLOCK):
        if not any(channel[start:start + BLOCK]):
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], start + BLOCK)
            else:
                runs.append((start, start + BLOCK))
    return runs


def check_paused_recording(inst: Airlock, call_dir, by: str, marks: dict) -> dict:
    manifest = inst.manifest(call_dir)
    if by == "https":  # with a broker, events go there instead of uplink/events.jsonl
        check_manifest(inst, call_dir, manifest)
    requested = [p for p in manifest["pauses"] if p.get("reason") == "request"]
    assert len(requested) == 1, manifest["pauses"]
    [interval] = requested
    assert interval["label"] == "*" and interval["requested_by"] == by, interval
    paused_ms = interval["end_ms"] - interval["start_ms"]
    asked_ms = (marks["resume"][0] - marks["pause"][1]) * 1000, (marks["resume"][1] - marks["pause"][0]) * 1000
    assert asked_ms[0] - EDGE_MS <= paused_ms <= asked_ms[1] + EDGE_MS, (interval, marks)

    wav = inst.recording(call_dir)
    assert wav.sample_rate == 8000 and wav.channels == 2
    start = interval["start_ms"] * 8
    end = interval["end_ms"] * 8
    edge = EDGE_MS * 8
    for label, stream in stream_by_label(manifest).items():
        channel = wav.channel(stream["channel"])
        loud = [k for k in range(0, len(channel) - BLOCK, BLOCK) if max(map(abs, channel[k:k + BLOCK])) > 2000]
        assert loud, f"label {label}: no audio at all"
        first, last = loud[0], loud[-1] + BLOCK
        # Inside the call's audio, exactly one silent span: the pause, where the manifest says it is.
        runs = silent_runs(channel, first, last)
        assert len(runs) == 1, f"label {label}: silent spans {runs} (pause {start}..{end})"
        [(silent_from, silent_to)] = runs
        assert abs(silent_from - start) <= edge and abs(silent_to - end) <= edge, \
            f"label {label}: silence {silent_from}..{silent_to} vs. pause {start}..{end}"
        # Not one sample of the paused span was written, and the audio on both sides of it is all there.
        assert not any(channel[start + edge:end - edge]), f"label {label}: audio inside the pause"
        for k in range(first, last, BLOCK):
            if not (silent_from - BLOCK <= k < silent_to + BLOCK):
                assert max(map(abs, channel[k:k + BLOCK])) > 2000, f"label {label}: a quiet block at {k}"
        assert silent_from - first > 8000 and last - silent_to > 8000, (first, silent_from, silent_to, last)
    return manifest


def test_pause_and_resume_over_https(airlock_factory, tmp_path):
    inst, api, _pki = start_with_api(airlock_factory, tmp_path)
    answers = {}

    def pause(call: RecordedCall) -> None:
        answers["pause"] = api.call("POST", f"/v1/calls/{call.session_id}/pause")
        # Idempotent, and the state can be read without changing it.
        answers["pause again"] = api.call("POST", f"/v1/calls/{call.session_id}/pause")
        answers["status"] = api.call("GET", f"/v1/calls/{call.session_id}")
        # Refused requests change nothing.
        answers["no token"] = api.call("POST", f"/v1/calls/{call.session_id}/resume", token=None)
        answers["wrong token"] = api.call("POST", f"/v1/calls/{call.session_id}/resume", token=TOKEN + "x")
        answers["unknown call"] = api.call("POST", "/v1/calls/0123456789abcdef/pause")
        answers["bad id"] = api.call("POST", "/v1/calls/%ff%fe/pause")
        answers["bad path"] = api.call("POST", f"/v1/calls/{call.session_id}/stop")
        answers["bad method"] = api.call("GET", f"/v1/calls/{call.session_id}/pause")
        answers["big body"] = api.call("POST", f"/v1/calls/{call.session_id}/pause", body=b"x" * 10_000)

    def resume(call: RecordedCall) -> None:
        answers["resume"] = api.call("POST", f"/v1/calls/{call.session_id}/resume")

    call, marks = record_with_pause(inst, pause, resume)
    [call_dir] = inst.wait_calls(1)
    ours = call_dir.name
    assert answers["pause"] == (200, {"call": ours, "state": "paused"}), answers
    assert answers["pause again"] == (200, {"call": ours, "state": "paused"}), answers
    assert answers["status"] == (200, {"call": ours, "state": "paused"}), answers
    assert answers["resume"] == (200, {"call": ours, "state": "recording"}), answers
    for case, status in [("no token", 401), ("wrong token", 401), ("unknown call", 404), ("bad id", 400),
                         ("bad path", 404), ("bad method", 405), ("big body", 413)]:
        code, body = answers[case]
        assert code == status and body["error"], (case, answers[case])
    assert "bearer token" in answers["no token"][1]["error"]
    assert "no live call" in answers["unknown call"][1]["error"]

    check_paused_recording(inst, call_dir, "https", marks)

    # Our own call name reaches the call too, but only while it is live.
    assert api.call("GET", f"/v1/calls/{ours}")[0] == 404
    assert api.call("GET", f"/v1/calls/{call.session_id}")[0] == 404

    samples = metrics.parse(inst.metrics_text())
    key = 'airlock_pause_requests_total{source="https",action="%s",outcome="%s"}'
    assert samples.get(key % ("pause", "ok")) == 2, samples
    assert samples.get(key % ("resume", "ok")) == 1, samples
    assert samples.get(key % ("resume", "unauthorised")) == 2, samples
    log = inst.log.read_text(errors="replace")
    assert TOKEN not in log and call.session_id not in log
    assert "call paused on request" in log and "call resumed on request" in log


def served_common_name(port: int, pki: Pki) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            return peer_common_name(tls)


def test_control_api_refuses_plain_http_reloads_its_certificate_and_needs_its_token_file(airlock_factory,
                                                                                         tmp_path):
    inst, api, pki = start_with_api(airlock_factory, tmp_path)
    port = int(api.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(f"GET /v1/calls/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        try:
            answer = plain.recv(4096)
        except OSError:
            answer = b""
    assert not answer.startswith(b"HTTP/"), f"plain HTTP was answered: {answer!r}"
    assert api.call("GET", "/v1/calls/x") == (404, {"error": "no live call has this id"})

    # A renewed certificate replaces the files: new connections get it, without a restart.
    assert served_common_name(port, pki) == "airlock.test"
    renewed = pki.server("renewed", cn="airlock-renewed")
    (pki.dir / "control-api.key").write_bytes(renewed.key.read_bytes())
    (pki.dir / "control-api.pem").write_bytes(renewed.cert.read_bytes())
    deadline = time.monotonic() + 15
    while served_common_name(port, pki) != "airlock-renewed":
        assert time.monotonic() < deadline, f"the renewed certificate was not loaded\n{inst.log.read_text()}"
        time.sleep(0.5)
    assert api.call("GET", "/v1/calls/x")[0] == 404
    assert "control API certificate reloaded" in inst.log.read_text(errors="replace")
    inst.terminate()

    bad = airlock_factory("bad", overrides={"control_api": {"listen": "127.0.0.1:1", "certificate": "c.pem",
                                                            "private_key": "k.pem"}})
    bad.config_path.write_text(to_toml(bad.config))
    proc = subprocess.run([str(bad.bin), "check-config", str(bad.config_path)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0 and "control_api.token_file" in proc.stderr, proc.stderr


def mqtt_broker_with_desktop(tmp_path, registry) -> Broker:
    """The site's broker, its ACL extended: the appliance may read its own cmd/ topics, the desktop
    integration may publish commands to them (and nothing else)."""
    broker = Broker(tmp_path / "mqtt", registry, Pki(tmp_path / "pki"), SITE, APPLIANCE)
    broker.desktop = broker.pki.issue("mqtt-desktop", "desktop", ["DNS:desktop"], server=False)
    broker.passwords["desktop"] = "desktop-secret"
    subprocess.run(["mosquitto_passwd", "-b", str(broker.dir / "passwd"), "desktop", "desktop-secret"], check=True,
                   capture_output=True)
    (broker.dir / "acl").write_text(f"user {APPLIANCE}\ntopic write {ROOT}/#\ntopic read {ROOT}/cmd/#\n\n"
                                    f"user desktop\ntopic write {ROOT}/cmd/#\n\n"
                                    "user noc\ntopic read airlock/v1/#\n")
    return broker.start()


def publish(broker: Broker, command: str, payload: bytes, user: str = "desktop") -> None:
    cred = broker.desktop if user == "desktop" else broker.noc
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
                    "--cafile", str(broker.pki.ca.cert), "--cert", str(cred.cert), "--key", str(cred.key),
                    "-u", user, "-P", broker.passwords[user], "-t", f"{ROOT}/cmd/{command}", "-s"],
                   input=payload, check=user == "desktop", capture_output=True, timeout=10)


def results(noc: Subscriber) -> dict[str | None, dict]:
    prefix = f"{ROOT}/evt/cmd/result "
    found = [json.loads(line[len(prefix):]) for line in noc.lines() if line.startswith(prefix)]
    return {result["request_id"]: result for result in found}


def test_pause_and_resume_over_mqtt(airlock_factory, registry, tmp_path):
    broker = mqtt_broker_with_desktop(tmp_path, registry)
    noc = Subscriber(broker)
    inst = airlock_factory(overrides={"outbox": {"site": SITE},
                                      "outbox.mqtt": broker.airlock_section(appliance=APPLIANCE,
                                                                            commands=True)}).start()
    noc.wait_for(lambda line: line == f"{ROOT}/state online", what="the retained state 'online'")
    def wait_result(request_id: str) -> dict:
        noc.wait_for(lambda _line: request_id in results(noc), timeout=15, what=f"the answer to {request_id}")
        return results(noc)[request_id]

    # The subscription is made after the connect: probe until a command is answered (an unknown call).
    deadline = time.monotonic() + 15
    for probe in range(100):
        publish(broker, "resume", json.dumps({"call_id": "probe", "request_id": f"probe-{probe}"}).encode())
        time.sleep(0.3)
        if any(key and key.startswith("probe-") for key in results(noc)):
            break
        assert time.monotonic() < deadline, "no answer to commands: the appliance did not subscribe"
    assert {r["outcome"] for k, r in results(noc).items() if k and k.startswith("probe-")} == {"not_found"}

    def pause(call: RecordedCall) -> None:
        publish(broker, "pause", json.dumps({"call_id": call.session_id, "request_id": "req-1"}).encode())
        wait_result("req-1")

    def resume(call: RecordedCall) -> None:
        publish(broker, "resume", json.dumps({"call_id": call.session_id, "request_id": "req-2"}).encode())
        wait_result("req-2")

    call, marks = record_with_pause(inst, pause, resume, seconds=8.0, pause_at=2.0, resume_at=5.0)
    [call_dir] = inst.wait_calls(1)
    answered = results(noc)
    assert answered["req-1"] | {"at": None} == {
        "event": "cmd_result", "command": "pause", "request_id": "req-1", "outcome": "ok", "state": "paused",
        "call": call_dir.name, "reason": None, "at": None}, answered
    assert answered["req-2"]["outcome"] == "ok" and answered["req-2"]["state"] == "recording", answered
    # The answers' latency (spool → broker → NOC) is part of the request instants here: widen by it.
    check_paused_recording(inst, call_dir, "mqtt", marks)

    # Bad payloads and unknown calls are answered, never fatal; an account the ACL does not let write
    # commands (the NOC's) reaches nothing.
    publish(broker, "pause", json.dumps({"call_id": call_dir.name, "request_id": "req-noc"}).encode(), user="noc")
    publish(broker, "pause", b"{not json")
    publish(broker, "pause", json.dumps({"call_id": "", "request_id": "req-3"}).encode())
    publish(broker, "resume", json.dumps({"call_id": call.session_id, "request_id": "req-4"}).encode())
    assert wait_result("req-3")["outcome"] == "bad_request" and "empty" in results(noc)["req-3"]["reason"]
    assert wait_result("req-4")["outcome"] == "not_found", results(noc)
    noc.wait_for(lambda _line: None in results(noc), what="the answer to the unreadable payload")
    assert results(noc)[None]["outcome"] == "bad_request"
    assert "req-noc" not in results(noc), results(noc)
    assert inst.alive()
    samples = metrics.parse(inst.metrics_text())
    key = 'airlock_pause_requests_total{source="mqtt",action="%s",outcome="%s"}'
    assert samples.get(key % ("pause", "ok")) == 1 and samples.get(key % ("resume", "not_found")) >= 2, samples
    assert call.session_id not in inst.log.read_text(errors="replace")


def test_voicestream_call_paused_by_its_five9_call_id(airlock_factory, tmp_path, vs_stubs):
    """A Five9 VoiceStream call (gRPC, two legs) is named by its callId; the pause silences both legs."""
    vs_port = free_port(tcp_and_udp=False)
    inst, api, _pki = start_with_api(
        airlock_factory, tmp_path,
        voicestream={"listen": f"127.0.0.1:{vs_port}", "insecure_plaintext": True, "leg_linger_secs": 2},
        **{"voicestream.trust_tokens": {"sub-1": ["token-1"]}})
    wait_tcp(vs_port, 10, inst.proc)
    call_id = "3" + "".join(str((k * 7) % 10) for k in range(14))
    n = 7 * 8000 // BLOCK * BLOCK
    legs = [LegClient(f"127.0.0.1:{vs_port}", LegConfig(vcc_call_id=call_id, call_leg=leg),
                      array("h", (int(8000 * math.sin(2 * math.pi * hz * k / 8000)) for k in range(n))))
            for leg, hz in (("agent", 500.0), ("customer", 700.0))]
    answers = {}
    for leg in legs:
        leg.start()
    try:
        started = time.monotonic()
        time.sleep(2.0)
        marks = {"pause": (time.monotonic() - started, None)}
        answers["pause"] = api.call("POST", f"/v1/calls/{call_id}/pause")
        marks["pause"] = (marks["pause"][0], time.monotonic() - started)
        time.sleep(2.5)
        before = time.monotonic() - started
        answers["resume"] = api.call("POST", f"/v1/calls/{call_id}/resume")
        marks["resume"] = (before, time.monotonic() - started)
        reports = [leg.join(30) for leg in legs]
    finally:
        for leg in legs:
            leg.cancel()
    assert all(report.error is None for report in reports), [r.describe() for r in reports]
    [call_dir] = inst.wait_calls(1)
    assert answers["pause"] == (200, {"call": call_dir.name, "state": "paused"}), answers
    assert answers["resume"] == (200, {"call": call_dir.name, "state": "recording"}), answers
    manifest = check_paused_recording(inst, call_dir, "https", marks)
    assert manifest["source"] == "voicestream"
    # Chunks that arrived while paused count as received, though none of them was written.
    sent = {report.leg: report.chunks_sent for report in reports}
    assert {s["label"]: s["packets_received"] for s in manifest["streams"]} == sent, (manifest["streams"], sent)
    assert call_id not in inst.log.read_text(errors="replace")
