"""The systemd unit deploy/systemd/fanout.service and its environment file: systemd's own
verifier and offline security analysis, and the real gateway accepting the command line and
environment the unit gives it."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TEST_JWT_SECRET

UNIT = REPO / "deploy" / "systemd" / "fanout.service"
ENV_FILE = REPO / "deploy" / "systemd" / "fanout.env"
INSTALLED_BINARY = "/usr/local/bin/fanout"
INSTALLED_ENV_FILE = "/etc/fanout/fanout.env"
INSTALLED_CONFIG = "/etc/fanout/fanout.toml"
# systemd-analyze security's exposure scale is 0-100 (shown as 0.0-10.0); 20 is "OK".
MAX_EXPOSURE = 20


def service_section() -> dict[str, list[str]]:
    """The [Service] settings, each with all its values (systemd allows repeats)."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def env_file_settings() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines()
                if line and not line.startswith("#"))


@pytest.fixture
def testable_unit(tmp_path, fanout_bin) -> Path:
    """The unit with its paths pointed at the gateway under test and a copy of the env file
    (systemd-analyze verify checks that the executable exists)."""
    env_copy = tmp_path / "fanout.env"
    env_copy.write_text(ENV_FILE.read_text())
    unit = tmp_path / "fanout.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(fanout_bin))
                    .replace(INSTALLED_ENV_FILE, str(env_copy)))
    return unit


def test_systemd_verifies_the_unit(testable_unit):
    result = subprocess.run(["systemd-analyze", "verify", testable_unit.name], cwd=testable_unit.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_unit_is_hardened(testable_unit):
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}",
                             testable_unit.name], cwd=testable_unit.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    s = service_section()
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "DynamicUser": "yes", "CapabilityBoundingSet": ""}.items():
        assert s[key] == [value], key


def test_limits_and_stop_timeout_fit_the_gateway():
    s = service_section()
    # Default max_connections is 100,000; the gateway wants 1,024 descriptors beyond it.
    assert int(s["LimitNOFILE"][0]) >= 100_000 + 1024
    drain_s = int(env_file_settings().get("FANOUT_DRAIN_S", "10"))
    assert int(s["TimeoutStopSec"][0]) > drain_s, "systemd must not kill the drain midway"
    assert s["KillSignal"] == ["SIGTERM"]
    assert s["EnvironmentFile"] == [INSTALLED_ENV_FILE]


def test_gateway_accepts_the_units_command_and_environment(fanout_bin, tmp_path):
    """ExecStart's arguments and the env file (its JWT secret filled in), given to the real
    gateway's check-config: every variable is a valid setting."""
    argv = shlex.split(service_section()["ExecStart"][0])
    assert argv[0] == INSTALLED_BINARY and argv[1] == "serve"
    config = tmp_path / "fanout.toml"
    config.write_text("")
    args = [str(config) if a == INSTALLED_CONFIG else a for a in argv[2:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    env |= env_file_settings() | {"FANOUT_JWT_SECRET": TEST_JWT_SECRET}
    result = subprocess.run([fanout_bin, "check-config", *args], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # An env file left as shipped (no secret) is refused rather than run insecurely.
    env["FANOUT_JWT_SECRET"] = ""
    unset = subprocess.run([fanout_bin, "check-config", *args], env=env,
                           capture_output=True, text=True, timeout=30)
    assert unset.returncode != 0
