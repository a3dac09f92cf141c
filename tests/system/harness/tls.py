"""A throw-away PKI for SIP-over-TLS tests, made with the openssl CLI: a test CA, a server certificate for
localhost/127.0.0.1, client certificates with chosen identities, and a second CA nobody trusts."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass
class Credential:
    cert: Path
    key: Path


class Pki:
    """Keys are EC P-256 (fast to make); every certificate is valid for two days."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = self._self_signed("ca", "Airlock Test CA")
        self.rogue_ca = self._self_signed("rogue-ca", "Rogue CA")

    def _self_signed(self, name: str, cn: str) -> Credential:
        cred = Credential(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", cred.key.name, "-out", cred.cert.name, "-days", "2", "-subj", f"/CN={cn}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                 cwd=self.dir)
        return cred

    def issue(self, name: str, cn: str, sans: list[str], *, server: bool, ca: Credential | None = None) -> Credential:
        """A leaf certificate signed by `ca` (default: the test CA)."""
        ca = ca or self.ca
        cred = Credential(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        csr = self.dir / f"{name}.csr"
        ext = self.dir / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        ext.write_text(f"subjectAltName={','.join(sans)}\nextendedKeyUsage={usage}\n"
                       "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", cred.key.name, "-out", csr.name, "-subj", f"/CN={cn}", cwd=self.dir)
        _openssl("x509", "-req", "-in", csr.name, "-CA", str(ca.cert), "-CAkey", str(ca.key),
                 "-CAcreateserial", "-out", cred.cert.name, "-days", "2", "-extfile", ext.name, cwd=self.dir)
        return cred

    def server(self, name: str = "server", cn: str = "airlock.test") -> Credential:
        return self.issue(name, cn, ["DNS:localhost", "IP:127.0.0.1"], server=True)

    def client_context(self, client: Credential | None = None) -> ssl.SSLContext:
        """What an SRC uses: trusts the test CA, checks the name `localhost`, optionally presents `client`."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if client:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx


def peer_common_name(sock: ssl.SSLSocket | dict) -> str:
    """The CN of the certificate the server presented (given the socket, or the certificate as getpeercert() gives
    it)."""
    cert = sock if isinstance(sock, dict) else (sock.getpeercert() or {})
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""
