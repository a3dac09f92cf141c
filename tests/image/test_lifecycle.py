"""Opt-in (ci/image-lifecycle; ~25 min under software emulation): one appliance through its life.

0.1.0 boots (data partition created and sealed to the swtpm) -> systemd-sysupdate fetches 0.2.0 over HTTP from
the host (SHA256SUMS signed with the test update key, verified in the VM) into the empty slot -> 0.2.0 boots with
a boot counter, the TPM still unlocks /var (new UKI, new PCR 11: the signed policy holds), airlock READY, the
version is blessed good -> the deliberately broken 0.3.0 is installed; airlock fails, the box reboots itself
(airlock-trial-failed) three times, and systemd-boot brings 0.2.0 back on its own. A tampered SHA256SUMS is
refused before any of it."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from vm import Driver, Vm, image_dir, publish_updates

pytestmark = pytest.mark.skipif(
    os.environ.get("AIRLOCK_IMAGE_LIFECYCLE") != "1",
    reason="opt-in: ci/image-lifecycle builds 0.1.0, 0.2.0 and the broken 0.3.0, then runs this",
)

BOOT_TIMEOUT = 600
BOOT_SEPARATOR = "BdsDxe: starting Boot"  # the firmware prints it once per boot, whatever the kernel's log level


def _boot(vm: Vm) -> dict[str, str]:
    line = vm.wait_for(r"AIRLOCK-CI BOOT (.*)$", BOOT_TIMEOUT).group(1)
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    fields["disk"] = vm.wait_for(r"AIRLOCK-CI DISK (.*)$", 30).group(1)
    fields["slots"] = vm.wait_for(r"AIRLOCK-CI SLOTS (.*)$", 30).group(1)
    fields["esp"] = vm.wait_for(r"AIRLOCK-CI ESP (.*)$", 30).group(1)
    return fields


def _boot_fields_after(vm: Vm, offset: int) -> dict[str, str]:
    text = vm.log()[offset:]
    fields = {}
    for key in ("DISK", "ESP"):
        found = re.search(rf"AIRLOCK-CI {key} (.*)\n", text)
        fields[key.lower()] = found.group(1) if found else ""
    return fields


def _update(driver: Driver, version: str, count: int) -> str:
    driver.send(f"update {version}")
    result = driver.wait_result("update", count, timeout=900).decode(errors="replace")
    return result


def test_update_rollback_and_tpm_unlock_across_versions(tmp_path):
    images = image_dir()
    keys = images / "test-keys"
    for version in ("0.1.0", "0.2.0", "0.3.0"):
        assert (images / f"update-{version}").is_dir(), f"build {version} first (ci/image-lifecycle)"
    served = tmp_path / "served"
    driver = Driver(served)
    vm = Vm(tmp_path / "vm", images / "airlock_0.1.0.raw")
    try:
        vm.start()
        boot = _boot(vm)
        assert boot["version"] == "0.1.0" and boot["airlock"] == "active", (boot, vm.log()[-3000:])
        assert "data=crypt" in boot["disk"], boot

        # A tampered release file: the signature over SHA256SUMS no longer matches, nothing is installed.
        publish_updates([images / "update-0.2.0"], served, keys / "gnupg")
        sums = (served / "SHA256SUMS").read_text()
        (served / "SHA256SUMS").write_text(sums.replace(sums[:8], "00000000", 1))
        refused = _update(driver, "0.2.0", 1)
        assert "exit=0" not in refused, refused
        assert re.search(r"(?i)signature|gpg|verif", refused), refused

        # 0.1.0 -> 0.2.0
        shutil.rmtree(served)
        publish_updates([images / "update-0.2.0"], served, keys / "gnupg")
        installed = _update(driver, "0.2.0", 2)
        assert "exit=0" in installed, installed
        assert "airlock_0.2.0+3-0.efi" in installed, installed
        driver.send("reboot")
        boot = _boot(vm)
        assert boot["version"] == "0.2.0", (boot, vm.log()[-3000:])
        assert boot["airlock"] == "active", (boot, vm.log()[-3000:])
        # Unlocked by the TPM under a new UKI (PCR 11 changed): the signed PCR 11 policy carried over.
        assert "var=[/dev/mapper/airlock-data ext4]" in boot["disk"], boot
        assert vm.log().count("first boot: creating the encrypted data partition") == 1
        assert boot["bless"] == "good", boot
        assert "airlock_0.2.0.efi" in boot["esp"], boot  # counter stripped by systemd-bless-boot
        assert "airlock_0.1.0 " in boot["slots"] and "airlock_0.2.0 " in boot["slots"], boot

        # 0.2.0 -> the broken 0.3.0: airlock fails, airlock-trial-failed reboots, three tries, then systemd-boot
        # starts 0.2.0 again — with no one touching the box (the test only reboots into the new version once).
        shutil.rmtree(served)
        publish_updates([images / "update-0.2.0", images / "update-0.3.0"], served, keys / "gnupg")
        installed = _update(driver, "0.3.0", 3)
        assert "exit=0" in installed, installed
        boots_before = vm.log().count(BOOT_SEPARATOR)
        driver.send("reboot")
        versions_booted = []
        deadline = time.monotonic() + 4 * BOOT_TIMEOUT
        while time.monotonic() < deadline:
            log = vm.log()
            if log.count(BOOT_SEPARATOR) > boots_before and "AIRLOCK-CI READY version=0.2.0" in log[
                log.rfind(BOOT_SEPARATOR):
            ]:
                break
            time.sleep(5)
        log = vm.log()
        for boot_text in log.split(BOOT_SEPARATOR)[1:]:
            found = re.search(r"AIRLOCK-CI BOOT version=(\S+) airlock=(\S+) bless=(\S+)", boot_text)
            versions_booted.append(found.groups() if found else ("?", "?", "?"))
        print("boots:", versions_booted)
        after_update = versions_booted[2:]  # boots 1 and 2 were 0.1.0 and 0.2.0
        trial_failures = log.count("airlock failed on a version on trial: rebooting")
        assert trial_failures == 3, (trial_failures, versions_booted)
        assert after_update[-1][:2] == ("0.2.0", "active"), versions_booted
        assert all(v[0] in ("0.3.0", "?") and v[1] != "active" for v in after_update[:-1]), versions_booted
        assert len(versions_booted) == 6, versions_booted
        boot = _boot_fields_after(vm, log.rfind(BOOT_SEPARATOR))
        assert "airlock_0.3.0+0-3.efi" in boot["esp"], boot  # the bad version stays on disk, marked bad
        assert "var=[/dev/mapper/airlock-data ext4]" in boot["disk"], boot
        driver.send("poweroff")
        assert vm.wait_exit(180) == 0
    finally:
        vm.stop()
        driver.close()
        (tmp_path / "serial-copy.log").write_text(vm.log())
