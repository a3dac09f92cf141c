"""The technician's status page over HTTPS, end to end in headless Debian Chromium: log in (a wrong password is
refused and shown), read health, live calls, spool, uplink and software; watch health turn DEGRADED when the
uplink fails; run the selftest from the page (a stopped MQTT broker shows as a red FAIL with what to do); read the
last problems; log out. Screenshots are taken at each step and checked by their pixels (the badge and marks carry
the state in colour). Beside the browser, raw HTTPS requests check what a browser hides: 401/303 without a
session, 403 for a form without the session's token, throttled logins, no-store and a script-less CSP; and nothing
on the page or in its JSON names a call's participants."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from harness.airlock import Airlock, airlock_binary
from harness.browser import Browser, dominant, near, share_near
from harness.calls import SiprecCall
from harness.mqtt import Broker
from harness.tls import Pki
from harness.status_page import Https, password_file
from harness.uplink import bring_uplink_back, record_burst, take_uplink_down, wait_metric
from harness import procs

PASSWORD = "field-tech-2026-ber"
GREEN, AMBER, RED, LOGIN_ERROR = "#15803d", "#d97706", "#b91c1c", "#fee2e2"
SITE, APPLIANCE = "ber", "airlock-7"


def make_password_file(tmp_path):
    path = password_file(tmp_path / "status-password", PASSWORD)
    assert path.read_text().startswith("$argon2id$") and PASSWORD not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o640
    return path


def status_page_section(tmp_path, pki: Pki) -> tuple[dict, int]:
    cert = pki.server("status-page")
    port = procs.free_port(tcp_and_udp=False)
    return {"listen": f"127.0.0.1:{port}", "certificate": str(cert.cert), "private_key": str(cert.key),
            "password_file": str(make_password_file(tmp_path))}, port


def wait_page(browser: Browser, url: str, predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        browser.get(url)
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed {what}:\n{browser.text('body')}")
        time.sleep(0.5)


@pytest.fixture
def browser(tmp_path):
    made: list[Browser] = []

    def make(cert) -> Browser:
        made.append(Browser(tmp_path / "browser", cert))
        return made[-1]

    yield make
    for b in made:
        b.close()


def test_a_technician_logs_in_reads_the_box_runs_the_selftest_and_logs_out(airlock_factory, registry, tmp_path,
                                                                            browser, speech_a, speech_b):
    pki = Pki(tmp_path / "pki")
    broker = Broker(tmp_path / "mqtt", registry, pki, SITE, APPLIANCE).start()
    page, port = status_page_section(tmp_path, pki)
    inst: Airlock = airlock_factory(overrides={
        "outbox": {"site": SITE},
        "outbox.mqtt": broker.airlock_section(appliance=APPLIANCE),
        "status_page": page,
    }).start()
    procs.wait_tcp(port, 10, inst.proc)
    base = f"https://127.0.0.1:{port}"
    b = browser(Path(page["certificate"]))
    # Not logged in: the page sends the browser to the login form.
    b.get(base + "/")
    assert b.driver.current_url == base + "/login"
    login = b.screenshot("01-login")
    assert b.find("#password").get_attribute("type") == "password"
    # Styled: a white login box on the grey page.
    assert dominant(login) == (0xf3, 0xf4, 0xf6), dominant(login)
    assert dominant(b.element_image("main.login")) == (0xff, 0xff, 0xff)

    # A wrong password is refused and said so (a red message box on the screenshot).
    b.find("#password").send_keys("not-the-password")
    b.submit("#login")
    assert b.text("#login-message") == "Wrong password."
    assert share_near(b.screenshot("02-wrong-password"), LOGIN_ERROR) > 0.001

    b.find("#password").send_keys(PASSWORD)
    b.submit("#login")
    assert b.driver.current_url == base + "/"
    healthy = b.screenshot("03-healthy")
    assert b.text("#health") == "HEALTHY"
    assert near(dominant(b.element_image("#health")), GREEN), dominant(b.element_image("#health"))
    header = healthy.crop((0, 0, healthy.width, b.find("header").size["height"]))
    assert share_near(header, GREEN) > 0.005 and share_near(header, AMBER) == 0.0, "a green badge, no amber one"
    assert f"Airlock {APPLIANCE}" in b.text("header h1") and SITE in b.text("header h1")
    assert b.text("#calls-active td") == "0"
    assert b.text("#uplink-objects th") == "Artifacts (local directory)"
    assert b.text("#version-airlock td") == inst_version()
    assert b.text("#selftest-summary") == "Not run since airlock started."

    # A live call shows up in numbers only.
    call = SiprecCall(inst.sip, ["1", "2"]).start()
    try:
        wait_page(b, base + "/", lambda: b.text("#calls-active td") == "1", "one active call")
        assert b.text("#calls-siprec td") == "1" and b.text("#calls-voicestream td") == "0"
        assert b.text("#calls-capture td") == "0"
        assert b.text("#calls-admission td") == "open"
        b.screenshot("04-one-call")
        shown = b.driver.page_source
        cookie = b.driver.get_cookie("__Host-airlock_session")["value"]
        _, as_json = Https(port, pki).request("GET", "/status.json", cookie=cookie)
        status = json.loads(as_json)
        assert status["calls"]["siprec"] == 1 and status["health"]["active_calls"] == 1, status
        for secret in ("party1", "party2", "example.com", "Party 1", call.uac.call_id):
            assert secret not in shown and secret not in as_json, secret
        assert call.bye().status == 200
    finally:
        call.close()
    inst.wait_calls(1)

    # The uplink for artifacts fails: DEGRADED, in amber, with the reason in words; warnings are listed.
    aside = take_uplink_down(inst)
    record_burst(inst, {"1": speech_a, "2": speech_b})
    wait_metric(inst, 'airlock_outbox_uplink_up{sink="objects"}', lambda v: v == 0)
    wait_page(b, base + "/", lambda: b.text("#health") == "DEGRADED", "DEGRADED")
    degraded = b.screenshot("05-degraded")
    header = degraded.crop((0, 0, degraded.width, b.find("header").size["height"]))
    assert near(dominant(b.element_image("#health")), AMBER), dominant(b.element_image("#health"))
    assert share_near(header, AMBER) > 0.005 and share_near(header, GREEN) == 0.0
    assert "artifacts cannot be delivered" in b.text("#reasons")
    assert b.text("#uplink-objects td").startswith("DOWN")
    assert int(b.text("#spool-objects td")) >= 1
    problems = b.text("#problems")
    assert "outbox delivery failed" in problems, problems
    for secret in ("party1", "example.com"):
        assert secret not in problems
    bring_uplink_back(inst, aside)
    wait_page(b, base + "/", lambda: b.text("#health") == "HEALTHY", "HEALTHY again", timeout=60)

    # The selftest, run from the page with the broker stopped: the MQTT check is a red FAIL saying what to do,
    # and the ports are bound by this running airlock.
    broker.stop()
    b.submit("#run-selftest")
    assert b.driver.current_url == base + "/#selftest"
    wait_page(b, base + "/", lambda: b.text("#selftest-summary").startswith("Run at "), "the selftest's report",
              timeout=120)
    summary = b.text("#selftest-summary")
    failed = int(re.search(r"(\d+) failed", summary).group(1))
    assert failed >= 1, summary
    rows = {row.get_attribute("data-check"): row for row in b.find_all("tr.check")}
    assert {"config", "port.status_page.listen", "uplink.mqtt"} <= set(rows), sorted(rows)
    mqtt_row = rows["uplink.mqtt"]
    assert mqtt_row.find_element("css selector", "td.mark").text == "FAIL"
    assert "check the uplink NIC" in mqtt_row.text, mqtt_row.text
    assert rows["config"].find_element("css selector", "td.mark").text == "OK"
    assert "bound by the running airlock" in rows["port.status_page.listen"].text
    shot = b.screenshot("06-selftest")
    mark = mqtt_row.find_element("css selector", "td.mark")
    b.driver.execute_script("arguments[0].scrollIntoView()", mark)
    assert near(dominant(b.element_image('tr[data-check="uplink.mqtt"] td.mark')), RED)
    assert share_near(shot, GREEN) > 0.0005, "OK marks are green"

    # Log out: the session is gone for the browser and for anyone holding its cookie.
    cookie = b.driver.get_cookie("__Host-airlock_session")["value"]
    b.submit("#logout")
    assert b.driver.current_url == base + "/login"
    response, _ = Https(port, pki).request("GET", "/status.json", cookie=cookie)
    assert response.status == 401
    b.screenshot("07-logged-out")
    assert inst.alive()


def inst_version() -> str:
    out = subprocess.run([str(airlock_binary()), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def test_what_the_browser_hides_sessions_tokens_throttling_and_headers(airlock_factory, tmp_path):
    pki = Pki(tmp_path / "pki")
    page, port = status_page_section(tmp_path, pki)
    inst = airlock_factory(overrides={"status_page": page}).start()
    procs.wait_tcp(port, 10, inst.proc)
    https = Https(port, pki)

    response, body = https.request("GET", "/")
    assert response.status == 303 and response.getheader("Location") == "/login"
    response, body = https.request("GET", "/status.json")
    assert response.status == 401 and "log in" in json.loads(body)["error"]
    response, body = https.request("GET", "/login")
    assert response.status == 200
    csp = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script" not in csp, csp
    assert response.getheader("Cache-Control") == "no-store"
    assert "<script" not in body

    cookie = https.login(PASSWORD)
    response, body = https.request("GET", "/status.json", cookie=cookie)
    assert response.status == 200 and json.loads(body)["health"]["state"] == "healthy"
    assert len(https.form_token(cookie)) == 64

    # A form from elsewhere (no or another token) is refused; the session's own token works.
    response, _ = https.request("POST", "/selftest", "form_token=" + "0" * 64, cookie=cookie)
    assert response.status == 403
    response, _ = https.request("POST", "/logout", "", cookie=cookie)
    assert response.status == 403
    response, _ = https.request("GET", "/status.json", cookie=cookie)
    assert response.status == 200, "a refused form does not end the session"
    response, _ = https.request("POST", "/selftest", "form_token=" + "0" * 64)
    assert response.status == 303, "without a session: to the login page"
    response, _ = https.request("GET", "/selftest", cookie=cookie)
    assert response.status == 405
    response, _ = https.request("GET", "/../etc/passwd", cookie=cookie)
    assert response.status in (400, 404)

    # A login posted from another site's page is refused before the password is looked at.
    response, body = https.request("POST", "/login", f"password={PASSWORD}", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status == 403 and "Log in from this page." in body

    # Five wrong passwords a minute, then logins are refused for a while (even the right one).
    for _ in range(5):
        response, body = https.request("POST", "/login", "password=guess")
        assert response.status == 401 and "Wrong password." in body
    response, body = https.request("POST", "/login", f"password={PASSWORD}")
    assert response.status == 429 and "Too many wrong passwords" in body
    assert 1 <= int(response.getheader("Retry-After")) <= 60
    response, _ = https.request("GET", "/status.json", cookie=cookie)
    assert response.status == 200, "an open session is not affected by the throttle"
    log = inst.log.read_text()
    assert PASSWORD not in log and "guess" not in log and cookie not in log
    assert log.count("a login with a wrong password was refused") == 5


@pytest.mark.parametrize("change, key", [
    ({"password_file": "/nonexistent/pw"}, "status_page.password_file"),
    ({"certificate": ""}, "status_page.certificate"),
    ({"session_idle_minutes": 0}, "status_page.session_idle_minutes"),
    ({"listen": "127.0.0.1"}, "status_page.listen"),
])
def test_bad_status_page_settings_name_the_key(tmp_path, change, key):
    pki = Pki(tmp_path / "pki")
    page, _ = status_page_section(tmp_path, pki)
    page.update(change)
    config = tmp_path / "airlock.toml"
    body = "\n".join(f"{k} = {json.dumps(v) if isinstance(v, str) else v}" for k, v in page.items())
    config.write_text(f'[sip]\nudp = "127.0.0.1:5999"\n[status_page]\n{body}\n')
    out = subprocess.run([str(airlock_binary()), "check-config", str(config)], capture_output=True, text=True)
    assert out.returncode == 2 and key in out.stderr, out.stderr


def test_a_plain_text_password_file_is_refused(tmp_path):
    pki = Pki(tmp_path / "pki")
    page, _ = status_page_section(tmp_path, pki)
    (tmp_path / "plain").write_text(PASSWORD + "\n")
    page["password_file"] = str(tmp_path / "plain")
    config = tmp_path / "airlock.toml"
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in page.items())
    config.write_text(f'[sip]\nudp = "127.0.0.1:5999"\n[status_page]\n{body}\n')
    out = subprocess.run([str(airlock_binary()), "check-config", str(config)], capture_output=True, text=True)
    assert out.returncode == 2 and "status_page.password_file" in out.stderr and "status-password" in out.stderr
    assert PASSWORD not in out.stderr
