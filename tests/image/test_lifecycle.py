"""Opt-in (ci/image-lifecycle; ~25 min under software emulation): one appliance through its life.

0.1.0 boots (data partition created and sealed to the swtpm) -> systemd-sysupdate fetches 0.2.0 over HTTP from
the host (SHA256SUMS signed with the test update key, verified in the VM) into the empty slot -> 0.2.0 boots with
a boot counter, the TPM still unlocks /var (new UKI, new PCR 11: the signed policy holds), airlock READY, the
version is blessed good -> a tampered SHA256SUMS is refused -> the deliberately broken 0.3.0 is installed, fails
three times, and systemd-boot brings 0.2.0 back on its own."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from vm import Driver, Vm, image_dir, publish_updates

pytestmark = pytest.mark.skipif(
    os.environ.get("AIRLOCK_IMAGE_LIFECYCLE") != "1",
    reason="opt-in: ci/image-lifecycle builds 0.1.0, 0.2.0 and the broken 0.3.0, then runs this",
)

BOOT_TIMEOUT = 600


def _boot(vm: Vm) -> dict[str, str]:
    line = vm.wait_for(r"AIRLOCK-CI BOOT (.*)$", BOOT_TIMEOUT).group(1)
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    fields["disk"] = vm.wait_for(r"AIRLOCK-CI DISK (.*)$", 30).group(1)
    fields["slots"] = vm.wait_for(r"AIRLOCK-CI SLOTS (.*)$", 30).group(1)
    fields["esp"] = vm.wait_for(r"AIRLOCK-CI ESP (.*)$", 30).group(1)
    return fields


def _update(driver: Driver, vm: Vm, version: str, count: int) -> str:
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
        refused = _update(driver, vm, "0.2.0", 1)
        assert "exit=0" not in refused, refused
        assert re.search(r"(?i)signature|gpg|verif", refused), refused

        # 0.1.0 -> 0.2.0
        shutil.rmtree(served)
        publish_updates([images / "update-0.2.0"], served, keys / "gnupg")
        installed = _update(driver, vm, "0.2.0", 2)
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

        # 0.2.0 -> the broken 0.3.0 -> three failed tries -> 0.2.0 again, with no one touching the box.
        shutil.rmtree(served)
        publish_updates([images / "update-0.2.0", images / "update-0.3.0"], served, keys / "gnupg")
        installed = _update(driver, vm, "0.3.0", 3)
        assert "exit=0" in installed, installed
        driver.send("reboot")
        tries = []
        while True:
            boot = _boot(vm)
            tries.append((boot["version"], boot["airlock"], boot["bless"], boot["esp"]))
            if boot["version"] != "0.3.0" or len(tries) > 4:
                break
            assert boot["airlock"] != "active" and boot["bless"] != "good", tries
            driver.send("reboot")  # as the watchdog or a technician would
        assert [t[0] for t in tries] == ["0.3.0", "0.3.0", "0.3.0", "0.2.0"], tries
        assert tries[-1][1] == "active", tries
        assert "airlock_0.3.0+0-3.efi" in tries[-1][3], tries  # the bad version stays marked bad
        assert "var=[/dev/mapper/airlock-data ext4]" in boot["disk"], boot
        driver.send("poweroff")
        assert vm.wait_exit(180) == 0
        print("boots:", tries)
    finally:
        vm.stop()
        driver.close()
        (tmp_path / "serial-copy.log").write_text(vm.log())
