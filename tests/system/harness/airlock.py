"""Runs target/release/airlock on loopback with a generated config and inspects what it produces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from . import audio, procs

ROOT = Path(__file__).resolve().parents[3]


def airlock_binary() -> Path:
    path = Path(os.environ.get("AIRLOCK_BIN", ROOT / "target" / "release" / "airlock"))
    if not path.is_file() or not os.access(path, os.X_OK):
        import pytest

        pytest.fail(f"airlock binary not found at {path} (cargo build --release -p airlock)", pytrace=False)
    return path


def to_toml(config: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(str(v))

    out = []
    for section, keys in config.items():
        out.append(f"[{section}]")
        out += [f"{k} = {value(v)}" for k, v in keys.items()]
        out.append("")
    return "\n".join(out)


class Airlock:
    def __init__(self, workdir: Path, registry: procs.ProcessRegistry, *, dev_identity: bool = False,
                 overrides: dict | None = None) -> None:
        self.bin = airlock_binary()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.sip_port = procs.free_port()
        self.metrics_port = procs.free_port(tcp_and_udp=False)
        self.media_range = procs.free_port_range(100)
        self.data_dir = workdir / "data"
        if dev_identity:
            recipients: list[str] = []
            self.identity = self.data_dir / "dev-identity.txt"
        else:
            self.identity = workdir / "identity.txt"
            recipients = [audio.age_keygen(self.identity)]
        self.config = {
            "sip": {"udp": f"127.0.0.1:{self.sip_port}", "tcp": f"127.0.0.1:{self.sip_port}",
                    "strict_src": False, "max_calls": 16},
            "media": {"bind_ip": "127.0.0.1", "advertise_ip": "127.0.0.1", "port_min": self.media_range[0],
                      "port_max": self.media_range[1], "inactivity_timeout_secs": 30},
            "recording": {"recipients": recipients},
            "storage": {"data_dir": str(self.data_dir)},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "shutdown": {"grace_secs": 5},
            # Off unless a test asks for it (tests/system/test_transcription.py): most tests check media
            # paths and must not pay for, or be timed against, speech recognition.
            "transcription": {"enabled": False},
        }
        for section, keys in (overrides or {}).items():
            self.config.setdefault(section, {}).update(keys)
        self.config_path = workdir / "airlock.toml"
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        # Where delivered objects appear: the local sink's `uplink/`, or an S3 test server's bucket directory.
        self.objects_root: Path | None = None

    @property
    def sip(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    @property
    def log(self) -> Path:
        return self.workdir / f"airlock-{self.runs}.log"

    def start(self, timeout: float = 20.0) -> "Airlock":
        for attempt in range(3):
            try:
                return self._start(timeout)
            except AssertionError as exc:
                # Another program took a picked port between the pick and airlock's bind: pick again.
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.sip_port = procs.free_port()
                self.metrics_port = procs.free_port(tcp_and_udp=False)
                self.config["sip"].update(udp=f"127.0.0.1:{self.sip_port}", tcp=f"127.0.0.1:{self.sip_port}")
                self.config["metrics"]["listen"] = f"127.0.0.1:{self.metrics_port}"
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> "Airlock":
        self.config_path.write_text(to_toml(self.config))
        self.runs += 1
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = self.registry.start(f"airlock#{self.runs}", [str(self.bin), "run", "--config",
                                                                   str(self.config_path)],
                                        log=self.log, cwd=self.workdir, env=env)
        try:
            procs.wait_tcp(self.sip_port, timeout, self.proc)
            procs.wait_tcp(self.metrics_port, timeout, self.proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- airlock log ---\n{procs.tail(self.log)}") from None
        return self

    def terminate(self, timeout: float | None = None) -> int:
        """SIGTERM and wait for exit (grace + margin); SIGKILL if it does not exit. Returns the exit code."""
        assert self.proc is not None
        if timeout is None:
            timeout = self.config["shutdown"]["grace_secs"] + 10
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"airlock did not exit within {timeout}s of SIGTERM\n{procs.tail(self.log)}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- outputs ------------------------------------------------------------------------------------------------
    @property
    def uplink(self) -> Path:
        return self.data_dir / "uplink"

    def finished_calls(self) -> list[Path]:
        """Delivered calls: the outbox writes `{site}/{yyyy}/{mm}/{dd}/{call}/` (under `uplink/`, or the bucket
        at `objects_root`) with the manifest last, so a call directory with its manifest is complete."""
        root = self.objects_root or self.uplink
        if not root.is_dir():
            return []
        return sorted((m.parent for m in root.rglob("manifest.json")), key=lambda p: p.name)

    def wait_calls(self, n: int = 1, timeout: float = 15.0) -> list[Path]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.finished_calls()
            if len(calls) >= n:
                time.sleep(0.2)  # let the writer finish any rename in flight
                return self.finished_calls()
            time.sleep(0.1)
        raise AssertionError(f"expected {n} finished call(s) in {self.objects_root or self.uplink}, found {len(self.finished_calls())}"
                             f"\n--- airlock log ---\n{procs.tail(self.log)}")

    def manifest(self, call_dir: Path) -> dict:
        return json.loads((call_dir / "manifest.json").read_text())

    def recording(self, call_dir: Path) -> audio.Wav:
        manifest = self.manifest(call_dir)
        name = (manifest.get("recording") or {}).get("file") or "recording.wav.age"
        path = call_dir / Path(name).name
        assert path.is_file(), f"recording {path} missing; dir has {sorted(p.name for p in call_dir.iterdir())}"
        return audio.parse_wav(audio.age_decrypt(path, self.identity))

    def events(self) -> list[dict]:
        path = self.uplink / "events.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            assert resp.status == 200
            return resp.read().decode()


def stream_by_label(manifest: dict) -> dict[str, dict]:
    return {str(s["label"]): s for s in manifest["streams"]}


def check_manifest(inst: Airlock, call_dir: Path, manifest: dict) -> None:
    """The fields every finished call must have, the recording's size and SHA-256, and an event line."""
    import hashlib

    for key in ("call", "streams", "recording", "end_reason"):
        assert manifest.get(key) not in (None, "", []), f"manifest lacks {key}: {manifest}"
    rec = manifest["recording"]
    for key in ("file", "sha256", "bytes", "sample_rate", "channels"):
        assert key in rec, f"manifest.recording lacks {key}: {rec}"
    blob = (call_dir / Path(rec["file"]).name).read_bytes()
    assert rec["bytes"] == len(blob), rec
    assert rec["sha256"].lower() == hashlib.sha256(blob).hexdigest(), rec
    for s in manifest["streams"]:
        for key in ("label", "channel", "codec", "packets_received", "packets_lost", "packets_late",
                    "packets_duplicate"):
            assert key in s, f"manifest stream lacks {key}: {s}"
    events = inst.events()
    assert events, "uplink/events.jsonl is missing or empty"
    names = {str(manifest["call"]), call_dir.name}
    assert any(any(n in json.dumps(e) for n in names) for e in events), \
        f"no event mentions call {names}: {events[-5:]}"
