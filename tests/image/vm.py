"""QEMU (OVMF, software emulation) + swtpm around a test build of the appliance image, and the host end of the
image's test driver (tests/image/vm-tree/usr/lib/airlock-ci/driver): an HTTP server on 127.0.0.1:8480 — the
guest's 10.0.2.2:8480 — that serves update payloads and hands the driver its next command.

Everything listens on the host's loopback only: QEMU's user networking forwards SIP (a free port to the guest's
5060), metrics (a free port to 9464), the status page (a free port to 8443) and the media range 30000-30015 one
to one."""

from __future__ import annotations

import hashlib
import http.server
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parents[2]
DRIVER_PORT = 8480
STATUS_PAGE_PORT = 8443  # the guest's status page (the site bundle of test_boot.py configures it)
MEDIA_PORTS = range(30000, 30016)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
DISK_BYTES = 5 * 1024**3  # the root slots take 2.6 GB; the data partition gets the rest (hw qemu: ≥ 1 GiB)


def image_dir() -> Path:
    """The test build (ci/build-image --test), $AIRLOCK_IMAGE_DIR or build/image-x86-64."""
    return Path(os.environ.get("AIRLOCK_IMAGE_DIR", REPO / "build" / "image-x86-64"))


def free_tcp_udp_port() -> int:
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no loopback port free for both TCP and UDP")


class Driver:
    """The host end of the guest's test driver: update files, commands, results."""

    def __init__(self, served: Path):
        self.served = served
        self.commands: queue.Queue[str] = queue.Queue()
        self.results: dict[str, list[bytes]] = {}
        self.polls: list[dict[str, str]] = []
        self._lock = threading.Condition()
        driver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                url = urlparse(self.path)
                if url.path == "/ci/next":
                    poll = {k: v[0] for k, v in parse_qs(url.query).items()}
                    with driver._lock:
                        driver.polls.append(poll)
                        driver._lock.notify_all()
                    try:
                        command = driver.commands.get_nowait()
                    except queue.Empty:
                        command = "wait"
                    self._send(200, command.encode())
                    return
                path = (driver.served / url.path.lstrip("/")).resolve()
                if driver.served.resolve() not in path.parents or not path.is_file():
                    self._send(404, b"not found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                with path.open("rb") as body:
                    shutil.copyfileobj(body, self.wfile, 1 << 20)

            def do_POST(self):
                name = urlparse(self.path).path.removeprefix("/ci/result/")
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with driver._lock:
                    driver.results.setdefault(name, []).append(body)
                    driver._lock.notify_all()
                self._send(200, b"ok")

            def _send(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", DRIVER_PORT), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def send(self, command: str) -> None:
        self.commands.put(command)

    def wait_result(self, name: str, count: int = 1, timeout: float = 300) -> bytes:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.results.get(name, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no result {name!r} #{count} from the guest within {timeout:.0f} s")
                self._lock.wait(left)
            return self.results[name][count - 1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def publish_updates(versions_dirs: list[Path], served: Path, gnupg_home: Path) -> None:
    """Puts several versions' update payloads (ci/build-image's update-V/) in one served directory with one
    SHA256SUMS signed by the test update key, as a release server would."""
    served.mkdir(parents=True, exist_ok=True)
    lines = []
    for directory in versions_dirs:
        for file in sorted(directory.glob("airlock_*")):
            target = served / file.name
            if not target.exists():
                os.link(file, target)
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            lines.append(f"{digest.hexdigest()}  {file.name}\n")
    (served / "SHA256SUMS").write_text("".join(lines))
    signature = served / "SHA256SUMS.gpg"
    signature.unlink(missing_ok=True)
    subprocess.run(
        ["gpg", "--batch", "--quiet", "--yes", "--detach-sign", "--output", str(signature), str(served / "SHA256SUMS")],
        env={**os.environ, "GNUPGHOME": str(gnupg_home)},
        check=True,
    )


def flash(image: Path, disk: Path) -> None:
    """Writes the image to the VM's disk as a technician flashes a box (docs/IMAGE.md): `bmaptool copy` of the
    compressed release file with its block map, which checks every mapped block's checksum as it writes. Falls back
    to a sparse copy only for an image built without them."""
    compressed = image.with_name(image.name + ".zst")
    block_map = image.with_name(image.name + ".bmap")
    if compressed.exists() and block_map.exists():
        disk.touch()
        subprocess.run(["bmaptool", "-q", "copy", "--bmap", str(block_map), str(compressed), str(disk)],
                       check=True, capture_output=True)
    else:
        subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)


def profile(arch: str) -> dict:
    """The QEMU test machine's hardware profile (hw/qemu-<arch>.toml), which the image is built for."""
    with open(Path(__file__).resolve().parents[2] / "hw" / f"qemu-{arch.replace('-', '_')}.toml", "rb") as f:
        return tomllib.load(f)


def profile_macs(arch: str) -> list[str]:
    return [nic["mac"] for nic in profile(arch)["nic"]]


class Vm:
    """One appliance: a disk (a sparse copy of the image, grown to DISK_BYTES), OVMF variables, a swtpm state —
    all kept in `work` across boots, so a test can power it off and on again like a real box."""

    def __init__(self, work: Path, image: Path, tpm: bool = True, arch: str = "x86-64", media: Path | None = None):
        self.work = work
        # A removable medium (e.g. a stick labelled AIRLOCK) attached as a second, read-only disk.
        self.media = media
        self.arch = arch
        self.tpm = tpm
        work.mkdir(parents=True, exist_ok=True)
        self.disk = work / "disk.raw"
        self.serial = work / "serial.log"
        self.vars = work / "vars.fd"
        self.tpm_state = work / "tpm"
        if not self.disk.exists():
            flash(image, self.disk)
            os.truncate(self.disk, max(DISK_BYTES, self.disk.stat().st_size))
        if not self.vars.exists():
            shutil.copyfile(self._vars_template(), self.vars)
        if tpm and not self.tpm_state.exists():
            self.tpm_state.mkdir()
            subprocess.run(
                ["swtpm_setup", "--tpm2", "--tpmstate", f"dir://{self.tpm_state}", "--createek",
                 "--create-ek-cert", "--create-platform-cert", "--lock-nvram"],
                check=True, capture_output=True,
            )
        self.sip_port = free_tcp_udp_port()
        self.metrics_port = free_tcp_udp_port()
        self.status_port = free_tcp_udp_port()
        self.qemu: subprocess.Popen | None = None
        self.swtpm: subprocess.Popen | None = None
        self._serial_offset = 0

    def _vars_template(self) -> Path:
        if self.arch == "arm64":
            return Path("/usr/share/AAVMF/AAVMF_VARS.fd")
        return OVMF_VARS

    def start(self) -> None:
        for port in MEDIA_PORTS:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", port))  # raises when a port of the forwarded media range is taken
        args = []
        if self.tpm:
            sock = self.work / "swtpm.sock"
            sock.unlink(missing_ok=True)
            self.swtpm = subprocess.Popen(
                ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.tpm_state}",
                 "--ctrl", f"type=unixio,path={sock}", "--flags", "startup-clear", "--terminate"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.05)
            tpm_device = "tpm-tis" if self.arch == "x86-64" else "tpm-tis-device"
            args += ["-chardev", f"socket,id=chrtpm,path={sock}", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                     "-device", f"{tpm_device},tpmdev=tpm0"]
        forwards = [f"hostfwd=udp:127.0.0.1:{self.sip_port}-:5060", f"hostfwd=tcp:127.0.0.1:{self.sip_port}-:5060",
                    f"hostfwd=tcp:127.0.0.1:{self.metrics_port}-:9464",
                    f"hostfwd=tcp:127.0.0.1:{self.status_port}-:{STATUS_PAGE_PORT}"]
        forwards += [f"hostfwd=udp:127.0.0.1:{port}-:{port}" for port in MEDIA_PORTS]
        # One NIC per [[nic]] of the machine's hardware profile, with its MAC (airlock selftest finds them by
        # it): the first carries the forwarded ports, the others sit on their own isolated user networks.
        nics = []
        for index, mac in enumerate(profile_macs(self.arch)):
            if index == 0:
                nics += ["-nic", f"user,model=virtio-net-pci,mac={mac}," + ",".join(forwards)]
            else:
                nics += ["-nic", f"user,model=virtio-net-pci,mac={mac},restrict=on,net=10.0.{2 + index}.0/24"]
        if self.arch == "x86-64":
            machine = ["qemu-system-x86_64", "-machine", "q35", "-cpu", "max", "-device", "i6300esb"]
            code = OVMF_CODE
        else:
            machine = ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72", "-device", "i6300esb"]
            code = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
        self.qemu = subprocess.Popen(
            machine + ["-accel", "tcg,thread=multi", "-m", "2048", "-smp", "2",
                       "-drive", f"if=pflash,format=raw,readonly=on,file={code}",
                       "-drive", f"if=pflash,format=raw,file={self.vars}",
                       "-drive", f"if=virtio,format=raw,file={self.disk}",
                       *(["-drive", f"if=virtio,format=raw,readonly=on,file={self.media}"] if self.media else []),
                       *nics, "-serial", f"file:{self.serial}", "-monitor", "none", "-display", "none"]
            + args,
            stdout=subprocess.DEVNULL, stderr=open(self.work / "qemu.err", "ab"),
        )

    def log(self) -> str:
        try:
            return self.serial.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float = 300, since_mark: bool = True) -> re.Match:
        """Waits for a line matching `pattern` in the serial log after the last match (so repeated boots are
        told apart); fails with the log's tail when QEMU ends or time runs out."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            text = text[: text.rfind("\n") + 1]  # complete lines only: QEMU may be half-way through one
            match = regex.search(text, self._serial_offset if since_mark else 0)
            if match:
                self._serial_offset = match.end()
                return match
            if self.qemu is not None and self.qemu.poll() is not None:
                raise AssertionError(f"QEMU ended (rc {self.qemu.returncode}) before /{pattern}/:\n{text[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ on the serial console within {timeout:.0f} s:\n{text[-4000:]}")
            time.sleep(0.5)

    def wait_exit(self, timeout: float = 180) -> int:
        assert self.qemu is not None
        return self.qemu.wait(timeout=timeout)

    def stop(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            self.qemu.kill()
            self.qemu.wait()
        if self.swtpm is not None and self.swtpm.poll() is None:
            self.swtpm.terminate()
            try:
                self.swtpm.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.swtpm.kill()
        self.qemu = None
        self.swtpm = None
