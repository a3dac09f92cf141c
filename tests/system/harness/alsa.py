"""Virtual ALSA capture devices for the local-capture tests, with no sound card and no kernel module.

`FifoFeeder`: ALSA's `file` plugin over the `null` PCM, whose `infile` is a FIFO this harness writes in real
time (sample-exact). `PulseTap`: a PulseAudio null sink's monitor through the `pulse` plugin, for a device that
vanishes mid-call (the server is killed).

For `FifoFeeder`, the `null` PCM delivers frames as fast as they are read, so the FIFO is what paces the
capture: the feeder writes one 60 ms chunk every 60 ms (a little ahead), each chunk a single write of at most
PIPE_BUF bytes (so a reader never sees part of one), and the `file` plugin's read blocks until the next chunk
is there. Each device is defined in `$HOME/.asoundrc` of a HOME given to the airlock process, with a `hint` so
that ALSA's device list (which cpal searches) shows it."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from array import array
from pathlib import Path

CHUNK_MS = 60
LEAD_CHUNKS = 2  # written ahead of real time, so the reader never waits mid-period


def write_asoundrc(home: Path, pcm: str, fifo: Path) -> None:
    """Defines capture PCM `pcm` (S16_LE, any rate and channel count the reader asks for) fed from `fifo`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".asoundrc").write_text(
        f'pcm.{pcm} {{\n'
        f'  type file\n'
        f'  slave.pcm "null"\n'
        f'  file "/dev/null"\n'
        f'  infile "{fifo}"\n'
        f'  format "raw"\n'
        f'  hint {{ show on description "Airlock test tap (file plugin)" }}\n'
        f'}}\n')


def interleave(channels: list[array]) -> bytes:
    """Channel sample arrays (same length) as interleaved little-endian S16 bytes."""
    n = len(channels[0])
    assert all(len(c) == n for c in channels)
    out = array("h", bytes(2 * n * len(channels)))
    for i, channel in enumerate(channels):
        out[i::len(channels)] = channel
    if out.itemsize == 2 and array("h", [1]).tobytes() != b"\x01\x00":
        out.byteswap()
    return out.tobytes()


class FifoFeeder(threading.Thread):
    """Writes `data` (interleaved S16_LE frames of `channels` channels at `rate`) into `fifo` in real time, then
    silence until stopped. Reopens the FIFO when the reader closes it (the device was closed and reopened)."""

    def __init__(self, fifo: Path, data: bytes, rate: int, channels: int) -> None:
        super().__init__(daemon=True)
        if not fifo.exists():
            os.mkfifo(fifo)
        self.fifo = fifo
        self.chunk = rate * CHUNK_MS // 1000 * channels * 2
        assert self.chunk <= 4096, "a chunk must be one atomic pipe write (PIPE_BUF)"
        self.data = data + bytes(-len(data) % self.chunk)
        self.stopped = threading.Event()
        self.started_at: float | None = None  # monotonic time the first chunk went in
        self.chunks_written = 0
        self.held_until = 0.0  # monotonic time until which nothing is written (a stalled device)

    def hold(self, seconds: float) -> None:
        """Writes nothing for `seconds` (the FIFO stays open: the device blocks, reporting no error), then goes on
        where it was, paced from then."""
        self.held_until = time.monotonic() + seconds

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)

    def _open(self) -> int | None:
        while not self.stopped.is_set():
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # no reader yet
                    raise
            time.sleep(0.02)
        return None

    def run(self) -> None:
        fd = self._open()
        if fd is None:
            return
        silence = bytes(self.chunk)
        index = 0
        self.started_at = time.monotonic()
        try:
            while not self.stopped.is_set():
                if time.monotonic() < self.held_until:
                    held = min(0.02, self.held_until - time.monotonic())
                    time.sleep(max(held, 0))
                    self.started_at += max(held, 0)
                    continue
                due = self.started_at + (index - LEAD_CHUNKS) * CHUNK_MS / 1000
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                offset = index * self.chunk
                chunk = self.data[offset:offset + self.chunk] or silence
                try:
                    os.write(fd, chunk)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                except BrokenPipeError:
                    os.close(fd)
                    fd = self._open()
                    if fd is None:
                        return
                    continue
                index += 1
                self.chunks_written = index
        finally:
            if fd is not None:
                os.close(fd)


class PulseTap:
    """A tap that can vanish: a PulseAudio server (started here, on a unix socket in `workdir`, with a null
    sink) whose sink monitor is an ALSA capture PCM through the `pulse` plugin (libasound2-plugins). Killing
    the server mid-stream makes the PCM fail the way an unplugged USB interface does (-EIO on poll)."""

    def __init__(self, workdir: Path, registry, rate: int, channels: int) -> None:
        self.workdir = workdir
        self.registry = registry
        self.rate = rate
        self.channels = channels
        self.socket = workdir / "pulse.sock"
        self.server = None
        self.starts = 0

    def write_asoundrc(self, home: Path, pcm: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / ".asoundrc").write_text(
            f'pcm.{pcm} {{\n'
            f'  type pulse\n'
            f'  server "unix:{self.socket}"\n'
            f'  device "tap.monitor"\n'
            f'  hint {{ show on description "Airlock test tap (PulseAudio null sink monitor)" }}\n'
            f'}}\n')

    def env(self) -> dict:
        runtime = self.workdir / "pulse-runtime"
        runtime.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "HOME": str(self.workdir), "XDG_RUNTIME_DIR": str(runtime),
                "PULSE_SERVER": f"unix:{self.socket}"}

    def start(self) -> None:
        self.starts += 1
        self.server = self.registry.start(
            f"pulseaudio#{self.starts}",
            ["pulseaudio", "--daemon=no", "-n", "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
             "-L", f"module-null-sink sink_name=tap rate={self.rate} channels={self.channels}",
             "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1"],
            log=self.workdir / f"pulseaudio-{self.starts}.log", env=self.env())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = subprocess.run(["pactl", "info"], env=self.env(), capture_output=True)
            if probe.returncode == 0:
                return
            assert self.server.poll() is None, f"pulseaudio exited ({self.workdir}/pulseaudio-{self.starts}.log)"
            time.sleep(0.2)
        raise AssertionError("pulseaudio did not answer")

    def kill(self) -> None:
        """The device vanishes."""
        assert self.server is not None
        self.server.kill()
        self.server.wait(5)

    def play(self, raw: Path):
        """Plays interleaved S16_LE `raw` into the sink (real time, paced by the server)."""
        return self.registry.start(
            "pacat", ["pacat", "--playback", "-d", "tap", "--raw", f"--rate={self.rate}",
                      f"--channels={self.channels}", "--format=s16le", str(raw)],
            log=self.workdir / "pacat.log", env=self.env())
