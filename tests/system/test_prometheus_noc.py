"""A real Prometheus (Debian's 2.42) scrapes the appliance on loopback and evaluates the NOC's alert rules
(docs/alerts/airlock.rules.yml, with every `for:` shortened to 1 s in a test copy): with the uplink down the
appliance's own metrics make AirlockUplinkDown fire for both sinks, and it resolves once the spool drained."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from harness import procs
from harness.uplink import bring_uplink_back, record_burst, take_uplink_down, wait_metric

RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts" / "airlock.rules.yml"


def query(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def firing(port: int, name: str) -> list[dict]:
    return [a for a in query(port, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name
            and a["state"] == "firing"]


def wait_ready(port: int, prom, timeout: float = 60.0) -> None:
    """Prometheus listens before its storage is open and answers its API with 503 until then: wait for /-/ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert prom.poll() is None, f"prometheus exited {prom.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready within {timeout} s")


def wait_for(what: str, check, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last})")


def test_prometheus_scrapes_the_appliance_and_the_uplink_alert_fires_and_resolves(airlock_factory, registry,
                                                                                 tmp_path, speech_a, speech_b):
    inst = airlock_factory().start()
    rules = tmp_path / "airlock.rules.yml"
    rules.write_text(re.sub(r"(?m)^(\s*for:\s*)\S+", r"\g<1>1s", RULES.read_text()))
    port = procs.free_port(tcp_and_udp=False)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules}\n"
        "scrape_configs:\n  - job_name: airlock\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{inst.metrics_port}']\n        labels:\n          site: test-site\n")
    prom = registry.start("prometheus", ["prometheus", f"--config.file={config}",
                                         f"--web.listen-address=127.0.0.1:{port}",
                                         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                          log=tmp_path / "prometheus.log")
    procs.wait_tcp(port, 20, prom)
    wait_ready(port, prom)

    # Scraped, and the rules loaded with their health ok.
    wait_for("the appliance is an up target", lambda: [t for t in query(port, "/api/v1/targets")["activeTargets"]
                                                      if t["labels"]["job"] == "airlock" and t["health"] == "up"])
    groups = query(port, "/api/v1/rules")["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"AirlockUplinkDown", "AirlockDown", "AirlockSpoolDiskFilling"} <= names, names
    assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups
    assert firing(port, "AirlockDown") == []

    aside = take_uplink_down(inst)
    record_burst(inst, {"1": speech_a, "2": speech_b})
    alerts = wait_for("AirlockUplinkDown fires for both sinks",
                      lambda: (lambda a: a if {x["labels"]["sink"] for x in a} == {"objects", "events"} else None)(
                          firing(port, "AirlockUplinkDown")))
    for alert in alerts:
        assert alert["labels"]["site"] == "test-site" and alert["labels"]["severity"] == "ticket", alert
        assert alert["labels"]["instance"] == f"127.0.0.1:{inst.metrics_port}", alert
    spooled = query(port, "/api/v1/query", query='airlock_outbox_spool_records{sink="objects"}')["result"]
    assert spooled and float(spooled[0]["value"][1]) >= 2, spooled

    bring_uplink_back(inst, aside)
    inst.wait_calls(1, timeout=40)
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="events"}', lambda v: v == 1, timeout=40)
    wait_for("AirlockUplinkDown resolves", lambda: firing(port, "AirlockUplinkDown") == [] or None)
    assert inst.terminate() == 0
