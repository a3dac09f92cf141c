"""Debian's mosquitto as the site's MQTT broker on loopback: TLS with client certificates, passwords and an ACL
that lets the appliance write only its own subtree and the NOC read it; persistence on, so a restarted broker
still holds the NOC's queued messages. A persistent `mosquitto_sub` session stands in for the NOC."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from . import procs
from .tls import Credential, Pki


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    def __init__(self, workdir: Path, registry: procs.ProcessRegistry, pki: Pki, site: str, appliance: str) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.pki = pki
        self.port = procs.free_port(tcp_and_udp=False)
        self.server = pki.issue("mqtt-broker", "mqtt.test", ["DNS:localhost", "IP:127.0.0.1"], server=True)
        self.appliance = pki.issue(f"mqtt-{appliance}", appliance, [f"DNS:{appliance}"], server=False)
        self.noc = pki.issue("mqtt-noc", "noc", ["DNS:noc"], server=False)
        self.passwords = {appliance: "appliance-secret", "noc": "noc-secret"}
        passwd = workdir / "passwd"
        passwd.write_text("")
        for user, password in self.passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
        acl = workdir / "acl"
        acl.write_text(f"user {appliance}\ntopic write airlock/v1/{site}/{appliance}/#\n\n"
                       "user noc\ntopic read airlock/v1/#\n")
        (workdir / "store").mkdir(exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            "user root\nper_listener_settings false\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {acl}\n"
            f"persistence true\npersistence_location {workdir / 'store'}/\n"
            "max_queued_messages 0\nmax_queued_bytes 0\n"
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {pki.ca.cert}\ncertfile {self.server.cert}\nkeyfile {self.server.key}\n"
            "require_certificate true\ntls_version tlsv1.2\n"
            "log_dest stdout\nlog_type all\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = self.registry.start("mosquitto", [MOSQUITTO, "-c", str(self.config)], log=self.log)
        procs.wait_tcp(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file and exits."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)
        self.proc = None

    def airlock_section(self, **overrides) -> dict:
        """The appliance's `[outbox.mqtt]`."""
        section = {"broker": f"127.0.0.1:{self.port}", "ca": str(self.pki.ca.cert),
                   "certificate": str(self.appliance.cert), "private_key": str(self.appliance.key),
                   "username": self.appliance.cert.stem.removeprefix("mqtt-"),
                   "password_file": str(self.dir / "appliance-password"), "keep_alive_secs": 5}
        (self.dir / "appliance-password").write_text(self.passwords[section["username"]] + "\n")
        section.update(overrides)
        return section


class Subscriber:
    """`mosquitto_sub` as the NOC: persistent session, QoS 1, reconnects on its own; lines 'topic payload'."""

    def __init__(self, broker: Broker, topic: str = "airlock/v1/#") -> None:
        self.broker = broker
        self.out = broker.dir / "noc.out"
        cred: Credential = broker.noc
        self.proc = broker.registry.start(
            "mosquitto_sub",
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-q", "1", "-c",
             "-i", "noc-1", "-x", "86400", "--cafile", str(broker.pki.ca.cert), "--cert", str(cred.cert),
             "--key", str(cred.key), "-u", "noc", "-P", broker.passwords["noc"], "-t", topic, "-v"],
            log=self.out)

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines() if self.out.is_file() else []

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "a message") -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines() if predicate(line)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"the NOC subscriber did not see {what} in {timeout} s; it saw: {self.lines()[-10:]}"
                             f"\n--- broker log ---\n{procs.tail(self.broker.log)}")
