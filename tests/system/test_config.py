"""(g) `airlock check-config`: exit 0 for a valid file, exit 2 with a message naming the bad key otherwise."""

from __future__ import annotations

import subprocess

import pytest

from harness.airlock import airlock_binary

VALID = """
[sip]
udp = "127.0.0.1:5099"
tcp = "127.0.0.1:5099"
strict_src = false
max_calls = 4
allow_sources = ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]
rate_limit_per_sec = 100
rate_limit_burst = 200
max_tcp_connections_per_source = 8

[media]
bind_ip = "127.0.0.1"
advertise_ip = "127.0.0.1"
port_min = 21000
port_max = 21099
inactivity_timeout_secs = 30

[recording]
recipients = []

[storage]
data_dir = "./airlock-data"

[metrics]
listen = "127.0.0.1:9499"

[shutdown]
grace_secs = 10
"""


def check_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "airlock.toml"
    path.write_text(text)
    return subprocess.run([str(airlock_binary()), "check-config", str(path)], capture_output=True, text=True,
                          timeout=20)


def test_valid_config_passes(tmp_path):
    proc = check_config(tmp_path, VALID)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_empty_config_passes(tmp_path):
    proc = check_config(tmp_path, "")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("text,key", [
    ('[sip]\nudpp = "127.0.0.1:5060"\n', "udpp"),
    ('[sipp]\nudp = "127.0.0.1:5060"\n', "sipp"),
    ('[media]\nport_min = "twenty thousand"\n', "port_min"),
    ('[media]\nbind_ip = "not-an-ip"\n', "bind_ip"),
    ('[shutdown]\ngrace_period = 3\n', "grace_period"),
    ('[sip]\nallow_sources = ["10.0.0.0/8", "10.0.0.1/33"]\n', "sip.allow_sources"),
    ('[sip]\nallow_sources = ["sbc.example.com"]\n', "`sbc.example.com`"),
    ('[sip]\nrate_limit_burst = 0\n', "sip.rate_limit_burst"),
    ('[sip]\nmax_tcp_connections_per_source = 0\n', "sip.max_tcp_connections_per_source"),
])
def test_bad_key_is_named(tmp_path, text, key):
    proc = check_config(tmp_path, text)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert key in proc.stdout + proc.stderr, f"message does not name `{key}`: {proc.stdout}{proc.stderr}"


def test_missing_file_fails(tmp_path):
    proc = subprocess.run([str(airlock_binary()), "check-config", str(tmp_path / "nope.toml")],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0
