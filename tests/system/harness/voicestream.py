"""A Five9 VoiceStream client for the system tests: one `LegClient` per call leg opens
`five9.voicestream.Voice/StreamingVoice`, sends the config, waits for SRV_REQ_START_STREAMING (1001), then streams
LINEAR16 8 kHz PCM in real time against an absolute schedule, with status events where the test asks for them.

The Python stubs are generated from appliance/voicestream/proto/voice.proto with grpc_tools.protoc at test time
(`stubs(out_dir)`); nothing generated is committed.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTO = Path(os.environ.get("VOICESTREAM_PROTO", ROOT / "appliance" / "voicestream" / "proto" / "voice.proto"))

SAMPLE_RATE = 8000
CHUNK_BYTES = 1600  # 100 ms of LINEAR16 at 8 kHz

# StreamingStatus.StatusCode values (proto enum; numbers are what goes on the wire).
SUCCESS = 0
CLT_CALL_ENDED = 1
CLT_CALL_HOLD = 2
CLT_CALL_RESUME = 3
CLT_DISCONNECT = 4
CLT_UNDOCUMENTED_2001 = 2001  # seen in a third-party receiver as "disconnect"; not in the proto
SRV_REQ_START_STREAMING = 1001
SRV_REQ_PAUSE_STREAMING = 1002
SRV_REQ_DISCONNECT = 1011
SRV_REQ_RECONNECT = 1012
SRV_ERROR_NO_RESOURCE = 1100
SRV_ERROR_TIMEOUT = 1101
SRV_ERROR_GENERIC = 1102

LEGS = {"agent": 0, "customer": 1, "supervisor": 2}

_stubs_lock = threading.Lock()
_stubs: tuple | None = None


def generate_stubs(out_dir: Path, proto: Path = PROTO) -> Path:
    """Runs grpc_tools.protoc on `proto` into `out_dir` (voice_pb2.py, voice_pb2_grpc.py); returns out_dir."""
    from importlib import resources

    from grpc_tools import protoc

    assert proto.is_file(), f"VoiceStream proto not found at {proto}"
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto.parent}", f"-I{well_known}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", str(proto)])
    assert rc == 0, f"grpc_tools.protoc failed ({rc}) on {proto}"
    stem = proto.stem
    for name in (f"{stem}_pb2.py", f"{stem}_pb2_grpc.py"):
        assert (out_dir / name).is_file(), f"protoc did not write {name}"
    return out_dir


def stubs(out_dir: Path | None = None):
    """(voice_pb2, voice_pb2_grpc), generated once per process into `out_dir` (a tmp dir) and imported from there."""
    global _stubs
    with _stubs_lock:
        if _stubs is not None:
            return _stubs
        if out_dir is None:
            import tempfile

            out_dir = Path(tempfile.mkdtemp(prefix="voicestream-stubs-"))
        generate_stubs(out_dir)
        # voice_pb2_grpc does `import voice_pb2`, so the directory has to be importable.
        sys.path.insert(0, str(out_dir))
        importlib.invalidate_caches()
        pb2 = importlib.import_module(f"{PROTO.stem}_pb2")
        pb2_grpc = importlib.import_module(f"{PROTO.stem}_pb2_grpc")
        _stubs = (pb2, pb2_grpc)
        return _stubs


# --- audio -------------------------------------------------------------------------------------------------------
def pcm_bytes(samples: array) -> bytes:
    """LINEAR16 little-endian bytes of `samples`."""
    out = array("h", samples)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def pcm_samples(data: bytes) -> array:
    out = array("h")
    out.frombytes(data[:len(data) - len(data) % 2])
    if sys.byteorder == "big":
        out.byteswap()
    return out


def chunks(samples: array, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """`samples` as LINEAR16 chunks of `chunk_bytes` (the last one may be shorter)."""
    assert chunk_bytes > 0 and chunk_bytes % 2 == 0, "a chunk must hold whole 16-bit samples"
    data = pcm_bytes(samples)
    return [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]


# --- channels -----------------------------------------------------------------------------------------------------
def channel(target: str, root_ca: bytes | None = None, server_name: str = "localhost"):
    """A grpc channel to `target` ("127.0.0.1:port"): plaintext, or TLS trusting `root_ca` (PEM) and checking
    the server's certificate for `server_name`."""
    import grpc

    opts = [("grpc.enable_retries", 0)]
    if root_ca is None:
        return grpc.insecure_channel(target, options=opts)
    creds = grpc.ssl_channel_credentials(root_certificates=root_ca)
    return grpc.secure_channel(target, creds, options=opts + [("grpc.ssl_target_name_override", server_name)])


# --- one leg ------------------------------------------------------------------------------------------------------
@dataclass
class LegConfig:
    vcc_call_id: str
    call_leg: str = "customer"  # agent | customer | supervisor
    domain_id: str = "dom-1"
    campaign_id: str = "campaign-1"
    agent_id: str = "agent-1"
    skill_id: str = "skill-1"
    subscription_id: str = "sub-1"
    trust_token: str = "token-1"
    header_token: str | None = None  # sent as gRPC metadata `x-five9-trust-token` when set
    encoding: int = 1  # LINEAR16
    sample_rate_hertz: int = SAMPLE_RATE


@dataclass
class Response:
    code: int
    message: str
    at: float  # monotonic


@dataclass
class LegReport:
    leg: str
    sent: array  # exactly the PCM samples this leg sent as audio_content, in order
    chunks_sent: int
    responses: list[Response]
    grpc_code: object  # grpc.StatusCode (None if the RPC never finished)
    grpc_details: str
    started: float | None  # monotonic time of the first audio chunk
    ended: float
    statuses_sent: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def codes(self) -> list[int]:
        return [r.code for r in self.responses]

    def describe(self) -> str:
        return (f"leg {self.leg}: grpc {self.grpc_code} {self.grpc_details!r}, responses {self.codes}, "
                f"{self.chunks_sent} chunks, statuses sent {self.statuses_sent}, error {self.error}")


class LegClient(threading.Thread):
    """One VoiceStream leg in a thread. `join()` returns its `LegReport`.

    `script` maps a chunk index to actions done just before that chunk is sent (index len(chunks) = after the
    last one): ("status", code[, message]) sends a `streaming_status`; ("pause", secs) sends no audio for that
    long and shifts the rest of the schedule by it. Convenience arguments: hold=(chunk, secs) makes
    CLT_CALL_HOLD / pause / CLT_CALL_RESUME at that chunk.

    `end` is how the stream finishes after the audio: "ended" (CLT_CALL_ENDED, then half-close), "disconnect"
    (CLT_DISCONNECT), "2001" (status 2001), "half_close" (no event), "vanish" (cancel the RPC with no end event;
    `vanish_after` chunks, default all), "stall" (keep the stream open, sending nothing, until the server ends it
    or `stall_secs` pass, then cancel).

    On SRV_REQ_DISCONNECT (1011) or SRV_REQ_RECONNECT (1012) from the server the client stops sending audio and
    half-closes, as a well-behaved client would.
    """

    def __init__(self, target: str, config: LegConfig, samples: array, *, chunk_bytes: int = CHUNK_BYTES,
                 root_ca: bytes | None = None, server_name: str = "localhost", chan=None,
                 script: dict[int, list[tuple]] | None = None, hold: tuple[int, float] | None = None,
                 end: str = "ended", vanish_after: int | None = None, stall_secs: float = 30.0,
                 audio_before_config: bool = False, wait_start: float = 10.0, start_delay: float = 0.0,
                 pace: bool = True, flush_secs: float = 0.3, rpc_timeout: float | None = None) -> None:
        super().__init__(name=f"vs-{config.call_leg}-{config.vcc_call_id}", daemon=True)
        assert config.call_leg in LEGS, config.call_leg
        assert end in ("ended", "disconnect", "2001", "half_close", "vanish", "stall"), end
        self.target = target
        self.config = config
        self.chunk_list = chunks(samples, chunk_bytes)
        self.chunk_secs = chunk_bytes / 2 / config.sample_rate_hertz
        self.root_ca = root_ca
        self.server_name = server_name
        self._chan = chan
        self.script: dict[int, list[tuple]] = {k: list(v) for k, v in (script or {}).items()}
        if hold is not None:
            at, secs = hold
            self.script.setdefault(at, []).extend([("status", CLT_CALL_HOLD), ("pause", secs),
                                                   ("status", CLT_CALL_RESUME)])
        self.end = end
        self.vanish_after = len(self.chunk_list) if vanish_after is None else vanish_after
        self.stall_secs = stall_secs
        self.audio_before_config = audio_before_config
        self.wait_start = wait_start
        self.start_delay = start_delay
        self.pace = pace
        self.flush_secs = flush_secs
        self.rpc_timeout = rpc_timeout

        self._sent = bytearray()
        self._chunks_sent = 0
        self._statuses: list[int] = []
        self._responses: list[Response] = []
        self._first_response = threading.Event()
        self._server_stop = threading.Event()  # 1011/1012 received
        self._rpc_done = threading.Event()
        self._call = None
        self._audio_t0: float | None = None
        self._error: str | None = None
        self._report: LegReport | None = None

    # -- messages --
    def _config_msg(self, pb2):
        c = self.config
        return pb2.StreamingVoiceRequest(streaming_config=pb2.StreamingConfig(
            voice_config=pb2.VoiceConfig(encoding=c.encoding, sample_rate_hertz=c.sample_rate_hertz),
            vcc_call_id=c.vcc_call_id, domain_id=c.domain_id, campaign_id=c.campaign_id, agent_id=c.agent_id,
            call_leg=LEGS[c.call_leg], trust_token=c.trust_token, subscription_id=c.subscription_id,
            skill_id=c.skill_id))

    def _audio_msg(self, pb2, data: bytes):
        msg = pb2.StreamingVoiceRequest(audio_content=data)
        msg.send_time.GetCurrentTime()
        return msg

    def _status_msg(self, pb2, code: int, message: str = ""):
        self._statuses.append(code)
        msg = pb2.StreamingVoiceRequest(streaming_status=pb2.StreamingStatus(code=code, message=message))
        msg.send_time.GetCurrentTime()
        return msg

    def _wait(self, until: float) -> bool:
        """Sleeps until monotonic `until`; False if the server asked us to stop (or the RPC ended) meanwhile."""
        while True:
            if self._server_stop.is_set() or self._rpc_done.is_set():
                return False
            left = until - time.monotonic()
            if left <= 0:
                return True
            self._server_stop.wait(min(left, 0.05))

    def _requests(self, pb2):
        if self.audio_before_config and self.chunk_list:
            yield self._audio_msg(pb2, self.chunk_list[0])
        yield self._config_msg(pb2)
        if not self.audio_before_config:
            # Five9 waits for the server's first response (SRV_REQ_START_STREAMING) before any audio.
            deadline = time.monotonic() + self.wait_start
            while not self._first_response.is_set() and not self._rpc_done.is_set():
                if time.monotonic() > deadline:
                    self._error = "no response to the config within wait_start"
                    return
                self._first_response.wait(0.05)
            if self._rpc_done.is_set() or (self._responses and
                                           self._responses[0].code != SRV_REQ_START_STREAMING):
                return
        t0 = time.monotonic()
        self._audio_t0 = t0
        shift = 0.0
        n = len(self.chunk_list)
        for i in range(n + 1):
            for action in self.script.get(i, []):
                if action[0] == "status":
                    yield self._status_msg(pb2, action[1], action[2] if len(action) > 2 else "")
                elif action[0] == "pause":
                    if not self._wait(time.monotonic() + action[1]):
                        return
                    shift += action[1]
                else:
                    raise ValueError(f"unknown script action {action!r}")
            if i == n:
                break
            if self.end == "vanish" and i >= self.vanish_after:
                break
            if self.pace and not self._wait(t0 + shift + i * self.chunk_secs):
                return
            if self._server_stop.is_set() or self._rpc_done.is_set():
                return
            data = self.chunk_list[i]
            yield self._audio_msg(pb2, data)
            # grpc asks for the next message only once this one was handed to the transport.
            self._sent += data
            self._chunks_sent += 1
        if self.end == "vanish":
            self._wait(time.monotonic() + self.flush_secs)  # let what was sent reach the server
            self._call.cancel()
            return
        if self.end == "stall":
            self._wait(time.monotonic() + self.stall_secs)
            if not self._rpc_done.is_set():
                self._call.cancel()
            return
        code = {"ended": CLT_CALL_ENDED, "disconnect": CLT_DISCONNECT, "2001": CLT_UNDOCUMENTED_2001}.get(self.end)
        if code is not None and not self._server_stop.is_set():
            yield self._status_msg(pb2, code, "")
        # returning half-closes the request stream

    def run(self) -> None:
        import grpc

        pb2, pb2_grpc = stubs()
        if self.start_delay:
            time.sleep(self.start_delay)
        own = self._chan is None
        chan = channel(self.target, self.root_ca, self.server_name) if own else self._chan
        code, details = None, ""
        try:
            stub = pb2_grpc.VoiceStub(chan)
            md = [("x-five9-trust-token", self.config.header_token)] if self.config.header_token else None
            self._call = stub.StreamingVoice(self._requests(pb2), metadata=md, timeout=self.rpc_timeout)
            try:
                for resp in self._call:
                    st = resp.status
                    self._responses.append(Response(int(st.code), st.message, time.monotonic()))
                    self._first_response.set()
                    if st.code in (SRV_REQ_DISCONNECT, SRV_REQ_RECONNECT):
                        self._server_stop.set()
                code, details = self._call.code(), self._call.details() or ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
        except Exception as exc:  # noqa: BLE001 - reported to the test
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._rpc_done.set()
            self._first_response.set()
            if own:
                chan.close()
        self._report = LegReport(self.config.call_leg, pcm_samples(bytes(self._sent)), self._chunks_sent,
                                 list(self._responses), code, details, self._audio_t0, time.monotonic(),
                                 list(self._statuses), self._error)

    def join(self, timeout: float | None = 30.0) -> LegReport:  # type: ignore[override]
        super().join(timeout)
        if self.is_alive():
            if self._call is not None:
                self._call.cancel()
            super().join(5)
            raise AssertionError(f"leg {self.config.call_leg} of {self.config.vcc_call_id} still running after "
                                 f"{timeout}s (sent {self._chunks_sent} chunks, responses "
                                 f"{[r.code for r in self._responses]})")
        assert self._report is not None
        return self._report

    def cancel(self) -> None:
        """Cancels the RPC (test cleanup)."""
        self._server_stop.set()
        if self._call is not None:
            self._call.cancel()

    @property
    def chunks_sent(self) -> int:
        return self._chunks_sent

    @property
    def sent_samples(self) -> int:
        return len(self._sent) // 2

    def responses(self) -> list[Response]:
        return list(self._responses)


# --- health and reflection ----------------------------------------------------------------------------------------
def health_check(chan, service: str = "", timeout: float = 5.0) -> str:
    """grpc.health.v1 Health/Check; returns the status name (e.g. "SERVING")."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    resp = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def reflected_services(chan) -> list[str]:
    """Service names the server lists over gRPC server reflection (grpcio-reflection's client, v1alpha)."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    return list(ProtoReflectionDescriptorDatabase(chan).get_services())


def reflected_method(chan, service: str, method: str):
    """The MethodDescriptor of `service`/`method` resolved from the server's reflection."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(chan))
    return pool.FindServiceByName(service).methods_by_name[method]
