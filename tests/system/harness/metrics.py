"""Reading the /metrics exposition (Prometheus text / OpenMetrics) and checking it with promtool."""

from __future__ import annotations

import re
import subprocess

from . import audio

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\S+)?$')


def parse(text: str) -> dict[str, float]:
    """{'name{labels}': value} for every sample; raises on a malformed line."""
    out: dict[str, float] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"line {n} is not a metric sample: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def value(samples: dict[str, float], name: str) -> float:
    """Sum of all series of `name` (with or without labels); 0 if absent."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def promtool_check(text: str) -> None:
    """`promtool check metrics`. promtool 2.42 reads the Prometheus 0.0.4 text format, where an OpenMetrics
    counter (`# TYPE x counter` with samples `x_total`) looks like an untyped metric without help: that one lint
    ("x_total no help text" where x is a declared counter) is accepted; anything else fails."""
    promtool = audio.require_tool("promtool")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=20)
    if proc.returncode == 0:
        return
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 3, f"promtool check metrics failed ({proc.returncode}): {problems}"
    counters = set(re.findall(r"^# TYPE (\S+) counter$", text, re.M))
    for p in problems:
        m = re.match(r"^(\S+)_total no help text$", p)
        assert m and m.group(1) in counters, f"promtool lint problem: {p!r}"
