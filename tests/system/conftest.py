"""Fixtures for Airlock's system tests. Every peer runs on 127.0.0.1 with ports picked per test; every process
a test starts is stopped at teardown (SIGTERM, then SIGKILL), and its log is printed if the test failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import audio, procs, voicestream
from harness.airlock import Airlock

TESTS_DIR = Path(__file__).resolve().parent
SIPP_DIR = TESTS_DIR.parent / "sipp"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def registry(request):
    reg = procs.ProcessRegistry()
    yield reg
    reg.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(reg.report())


@pytest.fixture
def airlock_factory(tmp_path, registry):
    """Builds (not starts) Airlock instances: airlock_factory(dev_identity=False, overrides={...})."""
    made: list[Airlock] = []

    def make(name: str = "airlock", **kw) -> Airlock:
        inst = Airlock(tmp_path / name, registry, **kw)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        if inst.alive():
            procs.stop_process(inst.proc, inst.config["shutdown"]["grace_secs"] + 5)


@pytest.fixture
def airlock(airlock_factory) -> Airlock:
    return airlock_factory().start()


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def speech_a(speech_dir) -> bytes:
    """About 3 s of PCMU speech (customer side)."""
    return audio.speech("Hello, I am calling about my invoice from last month.", speech_dir, "PCMU", "a")


@pytest.fixture(scope="session")
def speech_b(speech_dir) -> bytes:
    """About 3 s of PCMU speech (agent side), different from speech_a."""
    return audio.speech("Thank you for calling, let me look that up for you.", speech_dir, "PCMU", "b",
                        voice="en-us", speed=190)


@pytest.fixture(scope="session")
def vs_stubs(tmp_path_factory):
    """(voice_pb2, voice_pb2_grpc) generated from appliance/voicestream/proto/voice.proto for this session."""
    return voicestream.stubs(tmp_path_factory.mktemp("voicestream-stubs"))


@pytest.fixture
def tool():
    """tool('sipp') -> path; a missing tool fails the test."""
    return audio.require_tool
