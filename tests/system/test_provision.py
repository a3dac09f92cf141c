"""`airlock make-bundle` / `airlock provision` end to end: a signed site bundle applied to a site directory (progress
shown, files readable by owner and group only, configuration validated where it will live), then airlock run from it serves the bundle's
TLS certificate; tampered, foreign-signed, wrong-site, wrong-appliance, not-a-bundle and invalid-configuration
bundles and bundles older than the current one are each refused with their reason while the previous
provisioning stays exactly as it was; later bundles become new generations, the one before is kept and older
ones pruned; the same bundle again changes nothing (exit 3)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import stat
import subprocess
from pathlib import Path

from harness import audio, procs
from harness.airlock import airlock_binary, to_toml
from harness.tls import Pki

SITE = "lis"
APPLIANCE = "airlock-3"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(airlock_binary()), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


class Site:
    """A provisioning key, the box's trusted-keys file, a site directory, and bundles made from directories."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.key = tmp_path / "provisioning.key"
        self.site_dir = tmp_path / "site"
        self.trusted = tmp_path / "provisioning-keys.txt"
        self.pki = Pki(tmp_path / "pki")
        self.identity = tmp_path / "recording-identity.txt"
        self.recipient = audio.age_keygen(self.identity)
        self.sip_port = procs.free_port()
        self.control_port = procs.free_port(tcp_and_udp=False)
        self.count = 0
        made = run("provisioning-key", str(self.key), cwd=tmp_path)
        assert made.returncode == 0 and len(made.stdout.strip()) == 64, made.stderr

    def trust(self, *keys: Path) -> None:
        self.trusted.write_text("# provisioning keys\n" + "".join(Path(f"{k}.pub").read_text() for k in keys))

    def config(self, **changes) -> dict:
        current = self.site_dir / "current"
        config = {
            "sip": {"udp": f"127.0.0.1:{self.sip_port}", "tcp": f"127.0.0.1:{self.sip_port}"},
            "media": {"bind_ip": "127.0.0.1", "advertise_ip": "127.0.0.1"},
            "recording": {"recipients": [self.recipient]},
            "storage": {"data_dir": str(self.tmp / "data")},
            "metrics": {"listen": ""},
            "transcription": {"enabled": False},
            "outbox": {"site": SITE},
            "control_api": {"listen": f"127.0.0.1:{self.control_port}",
                            "certificate": f"{current}/tls/control.pem", "private_key": f"{current}/tls/control.key",
                            "token_file": f"{current}/control-token"},
        }
        for section, keys in changes.items():
            config.setdefault(section, {}).update(keys)
        return config

    def bundle(self, config: dict | None = None, site: str = SITE, appliance: str = APPLIANCE,
               key: Path | None = None) -> tuple[Path, dict[str, bytes]]:
        """Makes a bundle directory (airlock.toml, a fresh control-API certificate, a token) and signs it."""
        self.count += 1
        source = self.tmp / f"bundle-{self.count}"
        (source / "tls").mkdir(parents=True)
        server = self.pki.server(f"control-{self.count}")
        files = {
            "airlock.toml": to_toml(config or self.config()).encode(),
            "tls/control.pem": server.cert.read_bytes(),
            "tls/control.key": server.key.read_bytes(),
            "control-token": f"token-{self.count}-0123456789abcdef\n".encode(),
        }
        for name, content in files.items():
            (source / name).write_bytes(content)
        out = self.tmp / f"site-{self.count}.bundle"
        made = run("make-bundle", "--key", str(key or self.key), "--site", site, "--appliance", appliance,
                   "--out", str(out), str(source), cwd=self.tmp)
        assert made.returncode == 0, made.stderr
        return out, files

    def provision(self, bundle: Path, *extra: str) -> subprocess.CompletedProcess:
        return run("provision", str(bundle), "--site-dir", str(self.site_dir), "--trusted-keys", str(self.trusted),
                   *extra, cwd=self.tmp)

    def snapshot(self) -> dict[str, str]:
        """Every file and link under the site directory: what a refused bundle must leave as it was."""
        seen = {}
        for path in sorted(self.site_dir.rglob("*")):
            relative = str(path.relative_to(self.site_dir))
            if path.is_symlink():
                seen[relative] = "-> " + os.readlink(path)
            elif path.is_file():
                seen[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        return seen


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def test_a_signed_bundle_provisions_the_box_and_airlock_runs_from_it(tmp_path, registry):
    site = Site(tmp_path)
    first, files = site.bundle()
    site.trust(site.key)

    applied = site.provision(first)
    assert applied.returncode == 0, applied.stderr
    for step in range(1, 6):
        assert f"[{step}/5]" in applied.stderr, applied.stderr
    assert f'provisioned site "{SITE}", appliance "{APPLIANCE}"' in applied.stderr, applied.stderr
    current = site.site_dir / "current"
    assert os.readlink(current) == "generations/1"
    assert os.readlink(site.site_dir / "airlock.toml") == "current/airlock.toml"
    for name, content in files.items():
        path = current / name
        assert path.read_bytes() == content, name
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, name
    assert (current / "bundle-manifest.json").exists()
    # The same bundle again (a stick left in at the next boot): nothing to do, no new generation.
    again = site.provision(first)
    assert again.returncode == 3 and "already provisioned with this bundle" in again.stderr, again.stderr
    assert sorted(p.name for p in (site.site_dir / "generations").iterdir()) == ["1"]

    # airlock runs from the provisioned configuration and serves the bundle's certificate.
    config = site.site_dir / "airlock.toml"
    assert run("check-config", str(config), cwd=tmp_path).returncode == 0
    proc = registry.start("airlock", [str(airlock_binary()), "run", "--config", str(config)],
                          log=tmp_path / "airlock.log", cwd=tmp_path)
    procs.wait_tcp(site.control_port, 20, proc)
    expected = ssl.PEM_cert_to_DER_cert(files["tls/control.pem"].decode().split("-----END CERTIFICATE-----")[0]
                                        + "-----END CERTIFICATE-----\n")
    assert served_certificate(site.control_port) == expected
    procs.stop_process(proc, 10)


def test_refused_bundles_leave_the_previous_provisioning_as_it_was(tmp_path):
    site = Site(tmp_path)
    good, _ = site.bundle()
    site.trust(site.key)
    assert site.provision(good).returncode == 0
    before = site.snapshot()

    def refused(bundle: Path, *reason: str, extra: tuple[str, ...] = ()) -> None:
        result = site.provision(bundle, *extra)
        assert result.returncode == 1, result.stderr
        for words in reason:
            assert words in result.stderr, result.stderr
        assert "the previous provisioning is unchanged" in result.stderr
        assert site.snapshot() == before, "a refused bundle changed the site directory"

    # One byte of a file changed after signing.
    tampered = tmp_path / "tampered.bundle"
    data = bytearray(site.bundle()[0].read_bytes())
    data[-5] ^= 0x01
    tampered.write_bytes(bytes(data))
    refused(tampered, "altered after signing", "tls/control.pem")  # the last file (sorted)
    # Signed by a key the box does not trust.
    assert run("provisioning-key", str(tmp_path / "rogue.key"), cwd=tmp_path).returncode == 0
    rogue, _ = site.bundle(key=tmp_path / "rogue.key")
    refused(rogue, "not signed by a trusted provisioning key")
    # Not a bundle at all.
    zip_file = tmp_path / "photos.zip"
    zip_file.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    refused(zip_file, "not an Airlock site bundle")
    # Another site's bundle, and another appliance's.
    other_site, _ = site.bundle(site.config(outbox={"site": "ber"}), site="ber")
    refused(other_site, 'for site "ber"', 'belongs to site "lis"', "--change-site")
    other_box, _ = site.bundle(appliance="airlock-9")
    refused(other_box, 'for appliance "airlock-9"', '"airlock-3"')
    # Signed, for this box, but its configuration is invalid: named by key, nothing switched.
    invalid, _ = site.bundle(site.config(sip={"max_calls": 0}))
    refused(invalid, "not valid", "sip.max_calls")
    # A configuration for another site than the one the bundle is signed for.
    mismatch, _ = site.bundle(site.config(outbox={"site": "ber"}))
    refused(mismatch, 'outbox.site = "ber"', 'signed for site "lis"')

    # An older bundle (an old stick) must not bring back what a newer one replaced.
    newer, _ = site.bundle()
    assert site.provision(newer).returncode == 0
    before = site.snapshot()
    refused(good, "not after the current provisioning", "--allow-older")
    rolled_back = site.provision(good, "--allow-older")
    assert rolled_back.returncode == 0, rolled_back.stderr

    # --change-site moves the box on purpose.
    moved = site.provision(other_site, "--change-site")
    assert moved.returncode == 0, moved.stderr
    assert os.readlink(site.site_dir / "current") == "generations/4"


def test_generations_keep_the_one_before_and_prune_older(tmp_path):
    site = Site(tmp_path)
    bundles = [site.bundle()[0] for _ in range(3)]
    site.trust(site.key)
    for bundle in bundles:
        assert site.provision(bundle).returncode == 0
    generations = sorted(p.name for p in (site.site_dir / "generations").iterdir())
    assert generations == ["2", "3"], generations
    assert os.readlink(site.site_dir / "current") == "generations/3"


def test_make_bundle_never_invents_a_key(tmp_path):
    source = tmp_path / "site-dir"
    source.mkdir()
    (source / "airlock.toml").write_text("[outbox]\nsite = \"lis\"\n")
    made = run("make-bundle", "--key", str(tmp_path / "typo.key"), "--site", SITE, "--appliance", APPLIANCE,
               "--out", str(tmp_path / "x.bundle"), str(source), cwd=tmp_path)
    assert made.returncode == 1 and "provisioning-key" in made.stderr, made.stderr
    assert not (tmp_path / "typo.key").exists() and not (tmp_path / "x.bundle").exists()

