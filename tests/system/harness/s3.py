"""S3 servers for the system tests, each on 127.0.0.1 on a port picked per test and started through the test's
ProcessRegistry: s3s-fs (a real SigV4-verifying S3 server backed by a directory: the data path, credentials,
conditional writes, checksums, multipart) and moto_server (a mock that keeps Object Lock retention and legal holds,
which s3s-fs ignores). Both come with a boto3 client (path-style addressing, SigV4, us-east-1) for the test's own
checks of what arrived.

s3s-fs 0.14.1 on disk (measured with boto3; <root> is the directory on its command line, B64(x) is unpadded
URL-safe base64 of x):

* a bucket is the directory `<root>/<bucket>`; an object is the file `<root>/<bucket>/<key>` holding exactly the
  object's bytes ('/' in a key makes subdirectories);
* beside them in <root>: `.bucket-B64(bucket).object-B64(key).internal.json` ({"e_tag": ..., "checksum_sha256": ...
  when one was sent}) and `.bucket-B64(bucket).object-B64(key).metadata.json` ({"user_metadata": {...}} or {});
* a PUT streams into `<root>/.tmp.<n>.internal.part` and renames it into place: a PUT cut off by the client or by
  killing the server leaves no object (and, after a restart, no temporary file);
* CreateMultipartUpload writes `.upload-<upload-id>.json` (the access key that may use the upload) and
  `.bucket-B64(bucket).object-B64(key).upload-<upload-id>.metadata.json` (the user metadata given at create);
  each UploadPart writes `.upload_id-<upload-id>.part-<n>` (the part's bytes). CompleteMultipartUpload writes the
  object, deletes the upload record and the parts it listed (part files it did not list stay behind as orphans);
  AbortMultipartUpload deletes the record and every part; a Complete refused with EntityTooSmall deletes the
  record but leaves the parts (a second Complete gets 403 AccessDenied). There is no ListMultipartUploads (501
  NotImplemented): an unfinished upload is a `.upload-<id>.json` in <root> (`S3Server.pending_multipart_uploads()`),
  leftover part files are `S3Server.orphan_parts()`.

s3s-fs 0.14.1 behaviour a client must not be surprised by (boto3 1.44.8, all measured):

* PutObject with a wrong x-amz-checksum-sha256 gets 400 BadDigest, but the body has ALREADY replaced the file
  (a new key exists afterwards, an existing key holds the rejected bytes while HEAD still shows the old ETag and
  checksum). With If-None-Match: * a retry with the right checksum therefore gets 412 for an object that holds
  the bytes of the refused attempt.
* UploadPart does not verify x-amz-checksum-sha256 and echoes no checksum; CompleteMultipartUpload verifies
  neither the parts' checksums nor their ETags; the completed object has no ChecksumSHA256 (HEAD with
  ChecksumMode=ENABLED shows none). User metadata given at CreateMultipartUpload is kept.
* UploadPart/CompleteMultipartUpload for an unknown (or already completed) upload id answer 403 AccessDenied,
  not 404 NoSuchUpload. CompleteMultipartUpload with If-None-Match: * answers 412 when the key exists (the
  upload stays open); a wrong Content-MD5 answers 403 SignatureDoesNotMatch (not BadDigest) and stores nothing.
* If-None-Match: * is checked before the write, not atomically with it: of 16 concurrent create-only PUTs of one
  new key, 2 got 200 (the last rename wins). A test cannot use s3s-fs to prove that only one writer won.
* User metadata names come back lower-cased (as on AWS).

moto_server keeps everything in memory (a restarted MotoServer starts empty) and checks no signature. It refuses,
as AWS does, a PUT with a retention period that has neither Content-MD5 nor x-amz-sdk-checksum-algorithm
(400 MissingUploadObjectWithObjectLockHeaders: a bare x-amz-checksum-sha256 is not enough), and it records and
echoes x-amz-checksum-sha256 only when x-amz-sdk-checksum-algorithm: SHA256 comes with it.
"""

from __future__ import annotations

import base64
import datetime
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Self

import boto3
from botocore.client import BaseClient
from botocore.config import Config

from . import procs

S3S_FS = shutil.which("s3s-fs") or str(Path.home() / ".cargo" / "bin" / "s3s-fs")
MOTO_SERVER = shutil.which("moto_server") or "moto_server"
REGION = "us-east-1"

_PART_FILE = re.compile(r"^\.upload_id-(?P<upload>.+)\.part-(?P<part>\d+)$")
_UPLOAD_META = re.compile(r"^\.bucket-(?P<bucket>[A-Za-z0-9_-]+)\.object-(?P<key>[A-Za-z0-9_-]+)"
                          r"\.upload-(?P<upload>.+)\.metadata\.json$")


def _unb64(text: str) -> str:
    """s3s-fs's file-name encoding of bucket and key: URL-safe base64 without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


class _Server:
    """The parts both servers share: a loopback port kept across restarts, process lifecycle and boto3 helpers."""

    name = "s3"

    def __init__(self, workdir: Path, registry: procs.ProcessRegistry, access_key: str = "airlock-test",
                 secret_key: str = "airlock-test-secret-0123456789") -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.access_key = access_key
        self.secret_key = secret_key
        self.port = procs.free_port(tcp_and_udp=False)
        self.log = workdir / f"{self.name}.log"
        self.starts = 0
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        """Starts the server (again after stop/kill: same port, same data for s3s-fs; each run logs to its own file)
        and waits for its port."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.starts += 1
        self.log = self.dir / (f"{self.name}.log" if self.starts == 1 else f"{self.name}.{self.starts}.log")
        self.proc = self.registry.start(self.name, self.argv(), log=self.log, cwd=self.dir)
        procs.wait_tcp(self.port, timeout, self.proc)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait (SIGKILL after `grace`). Returns the exit code."""
        assert self.proc is not None
        return procs.stop_process(self.proc, grace)

    def kill(self) -> int | None:
        """SIGKILL at once (a crashed server: open connections are reset, nothing is flushed)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(5)

    def client(self, access_key: str | None = None, secret_key: str | None = None, **config) -> BaseClient:
        """A boto3 S3 client for this server. Other credentials (a wrong secret) and botocore Config options
        (e.g. retries={"max_attempts": 1}) can be passed. Checksums are only sent when the call asks for one,
        so what a test sends is what it wrote."""
        opts = {"s3": {"addressing_style": "path"}, "signature_version": "s3v4",
                "retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 30,
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required"}
        opts.update(config)
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=access_key or self.access_key, aws_secret_access_key=secret_key or self.secret_key,
            config=Config(**opts))

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix`: key → content."""
        c = self.client()
        out: dict[str, bytes] = {}
        kw = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = c.list_objects_v2(**kw)
            for item in page.get("Contents", []):
                out[item["Key"]] = c.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if not page.get("IsTruncated"):
                return out
            kw["ContinuationToken"] = page["NextContinuationToken"]

    def head(self, bucket: str, key: str) -> dict:
        """boto3's head_object answer (ContentLength, ETag, Metadata, ChecksumSHA256 if asked for, ...)."""
        return self.client().head_object(Bucket=bucket, Key=key)


class S3Server(_Server):
    """s3s-fs serving the directory `workdir/data` with one access key (SigV4 checked: a wrong secret gets 403)."""

    name = "s3s-fs"

    def __init__(self, workdir: Path, registry: procs.ProcessRegistry, access_key: str = "airlock-test",
                 secret_key: str = "airlock-test-secret-0123456789") -> None:
        super().__init__(workdir, registry, access_key, secret_key)
        self.data = workdir / "data"
        self.data.mkdir(exist_ok=True)

    def argv(self) -> list[str]:
        return [S3S_FS, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", self.access_key,
                "--secret-key", self.secret_key, str(self.data)]

    def pending_multipart_uploads(self) -> dict[str, tuple[str, str] | None]:
        """Multipart uploads created and neither completed nor aborted: upload id → (bucket, key), or None if the
        upload's metadata file is missing."""
        where: dict[str, tuple[str, str]] = {}
        for path in self.data.glob(".bucket-*.upload-*.metadata.json"):
            m = _UPLOAD_META.match(path.name)
            if m:
                where[m["upload"]] = (_unb64(m["bucket"]), _unb64(m["key"]))
        ids = [path.name.removeprefix(".upload-").removesuffix(".json") for path in self.data.glob(".upload-*.json")]
        return {upload: where.get(upload) for upload in ids}

    def orphan_parts(self) -> dict[str, list[int]]:
        """Part files on disk whose upload is no longer open (parts a Complete did not list, or left by a
        Complete refused with EntityTooSmall): upload id → part numbers."""
        open_ids = set(self.pending_multipart_uploads())
        out: dict[str, list[int]] = {}
        for path in self.data.glob(".upload_id-*.part-*"):
            m = _PART_FILE.match(path.name)
            if m and m["upload"] not in open_ids:
                out.setdefault(m["upload"], []).append(int(m["part"]))
        return {upload: sorted(parts) for upload, parts in out.items()}


class MotoServer(_Server):
    """moto_server (all AWS mocks; the tests use S3 only). It checks no signature: any credentials work."""

    name = "moto_server"

    def argv(self) -> list[str]:
        return [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)]

    def create_bucket(self, name: str, object_lock: bool = False) -> str:
        """A bucket; with object_lock=True, created with ObjectLockEnabledForBucket (which enables versioning)."""
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    def object_lock(self, bucket: str, key: str) -> tuple[str | None, datetime.datetime | None, str | None]:
        """(mode, retain-until in UTC, legal-hold status) of the object's current version, from HEAD.
        moto 5.2.5's GetObjectRetention is broken (it answers with the object itself instead of the retention
        document; boto3 reports HTTP 500), so HEAD's x-amz-object-lock-* headers are the source; GetObjectLegalHold
        works and is cross-checked when the object has a legal hold."""
        c = self.client()
        h = c.head_object(Bucket=bucket, Key=key)
        until = h.get("ObjectLockRetainUntilDate")
        if until is not None:
            until = until.astimezone(datetime.timezone.utc)
        hold = h.get("ObjectLockLegalHoldStatus")
        if hold is not None:
            got = c.get_object_legal_hold(Bucket=bucket, Key=key)["LegalHold"]["Status"]
            assert got == hold, f"legal hold: HEAD says {hold}, GetObjectLegalHold says {got}"
        return h.get("ObjectLockMode"), until, hold


class ThrottledProxy:
    """A TCP proxy on loopback between the appliance and an S3 server that forwards requests at `rate` bytes per
    second (responses at full speed), so a multipart upload takes long enough for a test to interrupt it between
    parts. One thread per direction and connection; `close()` stops listening and drops every connection."""

    def __init__(self, target_port: int, rate: int) -> None:
        import socket
        import threading

        self.rate = rate
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, self.rate), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source, sink, rate: int | None) -> None:
        import time

        chunk = 16384 if rate is None else max(1024, rate // 20)
        try:
            while True:
                data = source.recv(chunk)
                if not data:
                    break
                sink.sendall(data)
                if rate is not None:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
