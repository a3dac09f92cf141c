"""`airlock selftest` against real peers (s3s-fs, mosquitto with TLS, passwords and an ACL): with the uplink down
the checklist fails and names S3 and MQTT with what to do; with it up both pass; credentials the peers refuse are
told apart from an unreachable uplink; beside a running airlock the ports count as bound by it and the probe
does not take over airlock's own MQTT session; a bad configuration names its key; certificates about to expire
are warned about."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from harness import procs
from harness.airlock import Airlock, to_toml
from harness.mqtt import Broker
from harness.s3 import S3Server
from harness.tls import Pki
from harness.uplink import wait_metric

SITE = "lis"
APPLIANCE = "airlock-3"
BUCKET = "calls"


def selftest(inst: Airlock, *extra: str) -> subprocess.CompletedProcess:
    inst.config_path.write_text(to_toml(inst.config))
    return subprocess.run([str(inst.bin), "selftest", "--config", str(inst.config_path), *extra],
                          capture_output=True, text=True, timeout=120, cwd=inst.workdir)


def checks_of(inst: Airlock) -> tuple[dict[str, dict], int]:
    result = selftest(inst, "--json")
    return {check["id"]: check for check in json.loads(result.stdout)}, result.returncode


def with_uplink(airlock_factory, tmp_path: Path, s3: S3Server, broker: Broker) -> Airlock:
    secret = tmp_path / "s3-secret"
    secret.write_text(s3.secret_key + "\n")
    return airlock_factory(overrides={
        "outbox": {"site": SITE},
        "outbox.s3": {"endpoint": s3.endpoint, "bucket": BUCKET, "access_key_id": s3.access_key,
                      "secret_access_key_file": str(secret)},
        "outbox.mqtt": broker.airlock_section(appliance=APPLIANCE),
    })


def test_selftest_names_a_down_uplink_and_passes_once_it_is_up(airlock_factory, registry, tmp_path):
    s3 = S3Server(tmp_path / "s3", registry).start()
    s3.create_bucket(BUCKET)
    s3.stop()
    broker = Broker(tmp_path / "mqtt", registry, Pki(tmp_path / "pki"), SITE, APPLIANCE)
    inst = with_uplink(airlock_factory, tmp_path, s3, broker)

    # Uplink down: both fail, each saying what it is and what to do; non-zero exit.
    down = selftest(inst)
    assert down.returncode == 1, down.stdout + down.stderr
    lines = down.stdout.splitlines()
    for check_id, words in (("uplink.s3", "S3 unreachable"), ("uplink.mqtt", "MQTT broker unreachable")):
        [at] = [i for i, line in enumerate(lines) if line.startswith("[FAIL]") and f" {check_id} " in line]
        assert words in lines[at], lines[at]
        assert "→ check the uplink NIC" in lines[at + 1], lines[at:at + 2]
    assert down.stdout.rstrip().splitlines()[-1].endswith("skipped") and " failed" in lines[-1], lines[-1]
    checks, _ = checks_of(inst)
    assert checks["uplink.s3"]["status"] == "fail" and checks["uplink.mqtt"]["status"] == "fail", checks
    # Nothing the checklist prints carries a credential.
    assert s3.secret_key not in down.stdout and broker.passwords[APPLIANCE] not in down.stdout

    # Uplink up: both pass.
    s3.start()
    broker.start()
    checks, status = checks_of(inst)
    assert checks["uplink.s3"]["status"] == "ok", checks["uplink.s3"]
    assert checks["uplink.mqtt"]["status"] == "ok", checks["uplink.mqtt"]
    assert checks["config"]["status"] == "ok" and checks["spool.depth"]["status"] == "ok", checks
    assert checks["port.sip.udp"]["status"] == "ok" and "free" in checks["port.sip.udp"]["detail"], checks
    # The test PKI's certificates live two days: warned about, by key, with what to do.
    for key in ("cert.outbox.mqtt.ca", "cert.outbox.mqtt.certificate"):
        assert checks[key]["status"] == "warn" and "expires on" in checks[key]["detail"], checks[key]
        assert "renew" in checks[key]["fix"], checks[key]
    failed = {check_id for check_id, check in checks.items() if check["status"] == "fail"}
    # This machine's clock may or may not count as NTP-synchronised; nothing else may fail.
    assert failed <= {"time.sync"}, {check_id: checks[check_id] for check_id in failed}
    assert status == (1 if failed else 0)

    # Beside the running airlock: its ports count as bound by it, and the probe's own client id leaves
    # airlock's MQTT session alone.
    inst.start()
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="events"}', lambda v: v == 1)
    checks, _ = checks_of(inst)
    for check_id in ("port.sip.udp", "port.sip.tcp", "port.metrics.listen"):
        assert "bound by the running airlock" in checks[check_id]["detail"], checks[check_id]
    assert checks["uplink.mqtt"]["status"] == "ok", checks["uplink.mqtt"]
    # Had the probe used airlock's client id, the broker would have dropped airlock's session (MQTT allows one).
    time.sleep(1.0)
    log = inst.log.read_text(errors="replace")
    assert "MQTT connection lost" not in log, procs.tail(inst.log)
    assert log.count("connected to the MQTT broker") == 1, procs.tail(inst.log)
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="events"}', lambda v: v == 1)


def test_selftest_tells_refused_credentials_from_an_unreachable_uplink(airlock_factory, registry, tmp_path):
    s3 = S3Server(tmp_path / "s3", registry).start()
    s3.create_bucket(BUCKET)
    broker = Broker(tmp_path / "mqtt", registry, Pki(tmp_path / "pki"), SITE, APPLIANCE).start()
    inst = with_uplink(airlock_factory, tmp_path, s3, broker)
    (tmp_path / "s3-secret").write_text("not-the-secret-0123456789\n")
    (broker.dir / "wrong-password").write_text("not-the-password\n")
    inst.config["outbox.mqtt"]["password_file"] = str(broker.dir / "wrong-password")

    checks, status = checks_of(inst)
    assert status == 1
    assert checks["uplink.s3"]["status"] == "fail", checks["uplink.s3"]
    assert checks["uplink.s3"]["detail"].startswith("S3 refused the credentials"), checks["uplink.s3"]
    assert "access_key_id" in checks["uplink.s3"]["fix"], checks["uplink.s3"]
    assert checks["uplink.mqtt"]["status"] == "fail", checks["uplink.mqtt"]
    assert checks["uplink.mqtt"]["detail"].startswith("MQTT broker refused"), checks["uplink.mqtt"]
    assert "password_file" in checks["uplink.mqtt"]["fix"], checks["uplink.mqtt"]

    # A bucket that does not exist is neither.
    inst.config["outbox.s3"]["bucket"] = "no-such-bucket"
    (tmp_path / "s3-secret").write_text(s3.secret_key + "\n")
    checks, _ = checks_of(inst)
    assert checks["uplink.s3"]["detail"].startswith("S3 bucket not usable"), checks["uplink.s3"]


def test_selftest_names_the_bad_key_and_a_port_another_program_holds(airlock_factory, tmp_path):
    inst = airlock_factory()
    inst.config["sip"]["max_calls"] = 0
    result = selftest(inst)
    assert result.returncode == 1
    assert result.stdout.startswith("[FAIL] config") and "sip.max_calls" in result.stdout, result.stdout

    inst.config["sip"]["max_calls"] = 4
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", inst.sip_port))
        checks, status = checks_of(inst)
    assert status == 1
    assert checks["port.sip.udp"]["status"] == "fail", checks["port.sip.udp"]
    assert "taken by another program" in checks["port.sip.udp"]["detail"], checks["port.sip.udp"]
    assert "sip.udp" in checks["port.sip.udp"]["fix"], checks["port.sip.udp"]
