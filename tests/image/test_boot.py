"""The appliance image in QEMU (OVMF, software emulation, swtpm) — run by every CI run after ci/build-image --test:

the disk is flashed from the release files (.raw.zst + .bmap) with bmaptool, as a technician does, and a stick
labelled AIRLOCK with a signed site bundle is plugged in; first boot: the data partition is created, sealed to
the TPM (exactly the hardware profile's PCR policy) and mounted on /var, the site bundle is applied before airlock
starts; `airlock selftest` on the box finds the profile's NICs, TPM, sealed data partition and watchdog; airlock starts under its
hardened unit (MemoryDenyWriteExecute under the real systemd) and reports READY;
a SIPREC call from SIPp on the host, through the forwarded SIP and media ports, is recorded inside the VM
(test images do not transcribe: docs/IMAGE.md, "Known limits"), and its recording, fetched out, decrypts with the
site's `age` identity (not the factory's) to exactly the audio sent; the recovery key
escrowed on the ESP decrypts with the escrow identity. Second boot: the TPM unlocks /var with no prompt and the
call recorded before is still there."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "system"))
from harness import audio, g711, procs  # noqa: E402
from harness.airlock import airlock_binary, to_toml  # noqa: E402
from harness.rtp import RtpSender  # noqa: E402
from harness.browser import Browser, dominant, near  # noqa: E402
from harness.sipp import SippSiprecSrc  # noqa: E402
from harness.status_page import Https, password_file  # noqa: E402
from harness.tls import Pki  # noqa: E402

from vm import STATUS_PAGE_PORT, Driver, Vm, image_dir, profile  # noqa: E402

BOOT_TIMEOUT = 600  # software emulation on 2 shared cores: ~2 min per boot measured, first boot longer
TECHNICIAN_PASSWORD = "ci-technician-password"
SITE_DIR = "/var/lib/airlock-site/current"


def _version() -> str:
    versions = sorted(
        (tuple(int(part) for part in match.group(1).split(".")), match.group(1))
        for match in (re.fullmatch(r"airlock_(\d+\.\d+\.\d+)\.raw", p.name) for p in image_dir().iterdir())
        if match
    )
    if not versions:
        pytest.fail(f"no airlock_<version>.raw in {image_dir()}: run ci/build-image --test first")
    return versions[-1][1]


def _fetch(driver: Driver, path: str, count: int) -> tarfile.TarFile:
    driver.send(f"fetch {path}")
    blob = driver.wait_result("fetch", count, timeout=120)
    return tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz")


def _expected_tpm_line(arch: str) -> str:
    """The data partition's TPM token as the driver reports it, from the hardware profile the image is built for."""
    tpm = profile(arch)["tpm"]
    pcrs = "[" + ",".join(str(pcr) for pcr in tpm["pcrs"]) + "]"
    return f"pcrs={pcrs} signed={'[11]' if tpm['signed_pcr11'] else 'none'}"


def _selftest(driver: Driver) -> tuple[dict[str, dict], int]:
    """`airlock selftest --json` inside the VM: the checks by id, and its exit status."""
    driver.send("exec airlock selftest --json --config /etc/airlock/airlock.toml")
    output = driver.wait_result("exec", 1, timeout=180).decode()
    report, _, status = output.rpartition("exit=")
    return {check["id"]: check for check in json.loads(report)}, int(status)


def _site_stick(tmp_path: Path, keys: Path, pki: Pki) -> tuple[Path, Path]:
    """A stick labelled AIRLOCK carrying a site bundle signed with the test provisioning key: the factory
    configuration with the site's id, the site's own recording recipient and the technician's status page (its
    certificate from `pki`, the password TECHNICIAN_PASSWORD). Returns (stick, site identity)."""
    with open(image_dir() / "extra" / "usr" / "share" / "airlock" / "factory.toml", "rb") as f:
        config = tomllib.load(f)
    identity = tmp_path / "site-recording.key"
    config["recording"]["recipients"] = [audio.age_keygen(identity)]
    config.setdefault("outbox", {})["site"] = "ci-site"
    source = tmp_path / "site-bundle"
    (source / "status").mkdir(parents=True)
    page = pki.server("status-page")
    (source / "status" / "page.pem").write_bytes(page.cert.read_bytes())
    (source / "status" / "page.key").write_bytes(page.key.read_bytes())
    password_file(source / "status" / "password", TECHNICIAN_PASSWORD)
    config["status_page"] = {"listen": f"0.0.0.0:{STATUS_PAGE_PORT}", "certificate": f"{SITE_DIR}/status/page.pem",
                             "private_key": f"{SITE_DIR}/status/page.key",
                             "password_file": f"{SITE_DIR}/status/password"}
    (source / "airlock.toml").write_text(to_toml(config))
    bundle = tmp_path / "ci-site.bundle"
    subprocess.run([str(airlock_binary()), "make-bundle", "--key", str(keys / "provisioning.key"), "--site", "ci-site",
                    "--appliance", "ci-box", "--out", str(bundle), str(source)], check=True, capture_output=True)
    stick = tmp_path / "stick.img"
    subprocess.run(["mkfs.vfat", "-C", "-n", "AIRLOCK", str(stick), "16384"], check=True, capture_output=True)
    subprocess.run(["mcopy", "-i", str(stick), str(bundle), "::ci-site.bundle"], check=True, capture_output=True)
    return stick, identity


def _boot_line(vm: Vm) -> dict[str, str]:
    line = vm.wait_for(r"AIRLOCK-CI BOOT (.*)$", BOOT_TIMEOUT).group(1)
    return dict(re.findall(r"(\w+)=(\S+)", line))


def _status_page(vm: Vm, pki: Pki, tmp_path: Path, version: str, root_checks: dict[str, dict]) -> None:
    https = Https(vm.status_port, pki, timeout=180)
    started = time.monotonic()
    cookie = https.login(TECHNICIAN_PASSWORD)
    _, body = https.request("GET", "/status.json", cookie=cookie)
    status = json.loads(body)
    (tmp_path / "status.json").write_text(body)
    assert status["site"] == "ci-site", status
    system = status["system"]
    assert system["image_version"] == version, system
    assert system["root_slot"] == f"airlock_{version}", system
    assert system["boot_entry"] and system["boot_entry"].startswith(f"airlock_{version}"), system
    assert system["boot_state"] == "good", system
    token = https.form_token(cookie)
    response, _ = https.request("POST", "/selftest", f"form_token={token}", cookie=cookie)
    assert response.status == 303, response.status
    deadline = time.monotonic() + 150
    report = None
    while report is None and time.monotonic() < deadline:
        time.sleep(1)
        _, body = https.request("GET", "/status.json", cookie=cookie)
        report = json.loads(body)["selftest"]
    assert report and not report.get("error"), report
    page_checks = {check["id"]: check for check in report["checks"]}
    # The service's own selftest sees the box as root's does: its sandbox hides nothing the checks need.
    differ = {check_id: (page_checks.get(check_id), check) for check_id, check in root_checks.items()
              if page_checks.get(check_id, {}).get("status") != check["status"]}
    assert not differ, differ
    print(f"status page: login + status + selftest ({report['took_secs']:.1f} s on the box) in "
          f"{time.monotonic() - started:.1f} s")
    browser = Browser(tmp_path / "browser", pki.dir / "status-page.pem")
    try:
        browser.get(f"https://127.0.0.1:{vm.status_port}/login")
        browser.find("#password").send_keys(TECHNICIAN_PASSWORD)
        browser.submit("#login")
        browser.screenshot("status-page")
        badge = browser.text("#health")
        colour = dominant(browser.element_image("#health"))
        assert (badge == "HEALTHY" and near(colour, "#15803d")) or (badge == "DEGRADED" and near(colour, "#d97706")), \
            (badge, colour)
        assert browser.text("#version-image td") == version
        rows = {row.get_attribute("data-check") for row in browser.find_all("tr.check")}
        assert rows == set(page_checks), rows
    finally:
        browser.close()


@pytest.fixture
def driver(tmp_path):
    d = Driver(tmp_path / "served")
    yield d
    d.close()


def test_image_boots_records_a_call_and_keeps_it_sealed_across_a_reboot(driver, tmp_path):
    version = _version()
    keys = image_dir() / "test-keys"
    arch = os.environ.get("AIRLOCK_IMAGE_ARCH", "x86-64")
    # The technician's stick with the site bundle is in at the first boot: the box records for the site.
    pki = Pki(tmp_path / "pki")
    stick, site_identity = _site_stick(tmp_path, keys, pki)
    vm = Vm(tmp_path / "vm", image_dir() / f"airlock_{version}.raw", arch=arch, media=stick)
    registry = procs.ProcessRegistry()
    try:
        vm.start()
        boot = _boot_line(vm)
        status = vm.wait_for(r"AIRLOCK-CI STATUS (.*)$", 30).group(1)
        disk = vm.wait_for(r"AIRLOCK-CI DISK (.*)$", 30).group(1)
        tpm = vm.wait_for(r"AIRLOCK-CI TPM (.*)$", 30).group(1)
        log = vm.log()
        assert boot["version"] == version and boot["airlock"] == "active", (boot, log[-4000:])
        vm.wait_for(rf"AIRLOCK-CI READY version={re.escape(version)}", 30)
        assert "first boot: creating the encrypted data partition" in log
        assert "Ordering cycle" not in log, "systemd found an ordering cycle among the image's units"
        assert "airlock-provision: site bundle applied" in log, log[-6000:]
        assert 'provisioned site "ci-site", appliance "ci-box"' in log, log[-6000:]
        # The factory image's UKI has no boot counter: nothing to assess (tests/image/test_lifecycle.py checks the
        # assessment of updates).
        assert boot["bless"] == "clean", boot
        assert "root=[/dev/mapper/root erofs ro]" in disk, disk
        assert "verity=verified" in disk, disk
        assert "var=[/dev/mapper/airlock-data ext4]" in disk, disk
        assert "data=crypt" in disk and "escrow=yes" in disk, disk
        # Sealed to exactly the profile's policy (ci/build-image writes it into the image from hw/qemu-<arch>.toml).
        assert tpm.strip() == _expected_tpm_line(arch), tpm
        assert status.strip(), "airlock set no STATUS= line"

        # The technician's checklist, run on the box beside the running service: what the profile names is there.
        checks, selftest_exit = _selftest(driver)
        for check_id in ("config", "hw.profile", "tpm", "data.sealed", "watchdog", "disk.room", "spool.depth",
                         "uplink.s3", "uplink.mqtt"):
            assert checks[check_id]["status"] == "ok", checks[check_id]
        for nic in profile(arch)["nic"]:
            assert checks[f"nic.{nic['name']}"]["status"] == "ok", checks[f"nic.{nic['name']}"]
        assert "bound by the running airlock" in checks["port.sip.udp"]["detail"], checks["port.sip.udp"]
        assert "LUKS2" in checks["data.sealed"]["detail"], checks["data.sealed"]
        failed = {check_id for check_id, check in checks.items() if check["status"] == "fail"}
        # QEMU's user network offers no NTP server, so the clock never counts as synchronised there.
        assert failed <= {"time.sync"}, {check_id: checks[check_id] for check_id in failed}
        assert all(check.get("fix") for check in checks.values() if check["status"] != "ok"), checks
        assert selftest_exit == (1 if failed else 0), (selftest_exit, failed)

        # The technician's status page on the box, from the host through the forwarded port (the site bundle set it
        # up): what it says of the box, and the selftest run from it by the service itself, under its sandbox.
        _status_page(vm, pki, tmp_path, version, checks)

        # A SIPREC call from the host, through the forwarded ports, recorded inside the VM.
        speech = audio.speech("Hello, I am calling about my invoice from last month.", tmp_path, "PCMU", "a")
        audio_ms = len(speech) // 8
        sipp = SippSiprecSrc(registry, vm.sip_port, tmp_path / "sipp", call_ms=audio_ms + 2500)
        ports = sipp.ports(timeout=60)
        senders = {label: RtpSender(("127.0.0.1", port), speech, g711.PT_PCMU) for label, port in ports.items()}
        for sender in senders.values():
            sender.start()
        reports = {label: s.join(audio_ms / 1000 + 10) for label, s in senders.items()}
        for sender in senders.values():
            sender.close()
        sipp.wait()

        # The call leaves the VM once transcribed, redacted and finalised (slow under emulation).
        manifest = None
        fetches = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            fetches += 1
            tar = _fetch(driver, "var/lib/private/airlock/uplink", fetches)
            names = tar.getnames()
            manifests = [n for n in names if n.endswith("/manifest.json")]
            if manifests:
                manifest = json.load(tar.extractfile(manifests[0]))
                call_prefix = manifests[0].rsplit("/", 1)[0]
                recording = tar.extractfile(f"{call_prefix}/{Path(manifest['recording']['file']).name}").read()
                break
            time.sleep(3)
        assert manifest is not None, f"no call delivered inside the VM after {fetches} looks"
        (tmp_path / "manifest.json").write_text(json.dumps(manifest, indent=1))
        # Test images record without transcribing (ci/build-image --test): nothing may be held back or silenced.
        assert "transcript" not in manifest or not manifest["transcript"], manifest
        assert manifest.get("audio_redactions", []) == [], manifest
        (tmp_path / "recording.wav.age").write_bytes(recording)
        # Recorded for the site (its bundle's recipient), no longer for the factory's test recipient.
        wav = audio.parse_wav(audio.age_decrypt(tmp_path / "recording.wav.age", site_identity))
        with pytest.raises(AssertionError):
            audio.age_decrypt(tmp_path / "recording.wav.age", keys / "recording.key")
        streams = {s["label"]: s for s in manifest["streams"]}
        for label, report in reports.items():
            stream = streams[label]
            assert stream["packets_received"] == report.packets, (label, stream, report.packets)
            audio.assert_exact_but_silenced(
                wav.channel(stream["channel"]), report.expected_samples("PCMU"),
                manifest.get("audio_redactions", []), wav.sample_rate, f"label {label}",
            )
        # The recovery key on the ESP: age-encrypted to the escrow identity, a systemd recovery key inside.
        esp_path = re.search(r"AIRLOCK-CI ESP path=/(\S+)", vm.log()).group(1)
        esp = _fetch(driver, f"{esp_path}/airlock", fetches + 1)
        (tmp_path / "recovery-key.age").write_bytes(esp.extractfile(f"{esp_path}/airlock/recovery-key.age").read())
        recovery = audio.age_decrypt(tmp_path / "recovery-key.age", keys / "escrow.key").decode().strip()
        assert re.fullmatch(r"[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}", recovery), "not a recovery key"
        assert recovery not in vm.log(), "the recovery key reached the console"

        # Second boot: the TPM alone unlocks /var; the call is still there.
        driver.send("reboot")
        boot = _boot_line(vm)
        assert "already provisioned with this bundle" in vm.log(), "the stick left in was applied again"
        disk = vm.wait_for(r"AIRLOCK-CI DISK (.*)$", 30).group(1)
        assert boot["airlock"] == "active", (boot, vm.log()[-4000:])
        assert "var=[/dev/mapper/airlock-data ext4]" in disk, disk
        assert vm.log().count("first boot: creating the encrypted data partition") == 1
        fetches += 2
        tar = _fetch(driver, "var/lib/private/airlock/uplink", fetches)
        assert any(n.endswith("/manifest.json") for n in tar.getnames()), tar.getnames()
        driver.send("poweroff")
        assert vm.wait_exit(180) == 0
    finally:
        registry.stop_all()
        vm.stop()
        (Path(tmp_path) / "serial-copy.log").write_text(vm.log())
