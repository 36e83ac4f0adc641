"""systemd unit (verified by systemd-analyze), `agent service install|uninstall`, credentials."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.ops.deploy import credential_dropin, deploy_file, hidden_from_service, render_unit
from tests.test_cli import one_error_line, run

AGENT_EXE = Path(sys.executable).parent / "agent"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("AGENT_REQUIRE_SYSTEMD") == "1":
            pytest.fail(
                "systemd-analyze missing (AGENT_REQUIRE_SYSTEMD=1): apt-get install systemd"
            )
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return found


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([systemd_analyze(), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def unit_settings(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(text)
    return {s: dict(parser[s]) for s in parser.sections()}


def test_repo_unit_is_clean_under_systemd_analyze_verify(tmp_path):
    # The unit as shipped, with ExecStart pointing at this venv's agent (verify checks it exists).
    unit = tmp_path / "agent.service"
    unit.write_text(render_unit(AGENT_EXE, Path("/etc/agent/agent.toml")))
    out = verify(unit)
    assert out.returncode == 0 and out.stderr.strip() == "" and out.stdout.strip() == "", (
        out.stdout + out.stderr
    )
    # With the credential drop-in folded in, too.
    unit.write_text(unit.read_text() + "\n" + credential_dropin(Path("/etc/agent/mqtt-password")))
    out = verify(unit)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_unit_exposure_level_under_systemd_analyze_security(tmp_path):
    unit = tmp_path / "agent.service"
    unit.write_text(render_unit(AGENT_EXE, Path("/etc/agent/agent.toml")))
    out = subprocess.run([systemd_analyze(), "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    found = re.search(r"Overall exposure level for agent.service: ([0-9.]+)", out.stdout)
    assert found, out.stdout + out.stderr
    print(f"\nsystemd-analyze security: exposure {found.group(1)} (0 = locked down, 10 = none)")
    assert float(found.group(1)) <= 2.5


def test_unit_has_the_contract_of_a_long_running_hardened_service():
    s = unit_settings(deploy_file("agent.service").read_text())["Service"]
    assert s["Type"] == "notify" and s["WatchdogSec"] and s["Restart"] == "on-failure"
    assert s["RestartPreventExitStatus"] == "2"  # config errors: no restart loop
    assert s["ExecStart"] == "/opt/agent/bin/agent --config /etc/agent/agent.toml run"
    assert s["StateDirectory"] == "agent" and s["ReadWritePaths"] == "/var/lib/agent"
    assert s["User"] == "agent" and s["SupplementaryGroups"] == "video"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s[key] == "yes", key
    assert s["ProtectSystem"] == "strict"
    assert s["EnvironmentFile"] == "-/etc/agent/agent.env"


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run("service", "install", "--root", str(root), *args)


def test_service_install_writes_unit_config_and_env_under_a_root(tmp_path, example_gallery):
    root = tmp_path / "root"
    out = install(root, "-s", "door=rtsp://10.0.0.5/s1", "-s", "usb=0",
                  "--broker", "broker.local:1884", "--device-id", "shelf-1")  # fmt: skip
    assert out.returncode == 0, out.stderr
    # Without a gallery the agent would exit 2 at once: enabled, not started, and told why.
    assert "would run: systemctl enable agent.service" in out.stdout
    assert "not started: no gallery at /var/lib/agent/gallery yet" in out.stdout
    assert "journalctl -u agent.service -f" in out.stdout
    unit = root / "etc/systemd/system/agent.service"
    config = root / "etc/agent/agent.toml"
    assert f"-c {config} status" in " ".join(out.stdout.split())  # the file it wrote
    env = root / "etc/agent/agent.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    exec_start = unit_settings(unit.read_text())["Service"]["ExecStart"]
    assert exec_start == f"{AGENT_EXE} --config /etc/agent/agent.toml run"
    assert verify(unit).returncode == 0

    cfg = load_config(config)  # the skeleton plus what was given is a valid config
    assert [(s.id, s.uri) for s in cfg.sources] == [("door", "rtsp://10.0.0.5/s1"), ("usb", "0")]
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.device_id) == ("broker.local", 1884, "shelf-1")
    assert cfg.state_dir == Path("/var/lib/agent")

    shutil.copytree(example_gallery, root / "var/lib/agent/gallery")
    config.write_text(config.read_text() + "\n# edited by hand\n")
    again = install(root, "--mqtt-password-file", str(env))
    assert again.returncode == 0, again.stderr
    assert "would run: systemctl enable --now agent.service" in again.stdout
    assert "kept /etc/agent/agent.toml (exists)" in again.stdout
    assert config.read_text().endswith("# edited by hand\n")  # never overwritten
    secret = root / "etc/agent/mqtt-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    dropin = root / "etc/systemd/system/agent.service.d/credentials.conf"
    assert "LoadCredential=mqtt-password:/etc/agent/mqtt-password" in dropin.read_text()

    gone = run("service", "uninstall", "--root", str(root))
    assert gone.returncode == 0, gone.stderr
    assert "would run: systemctl disable --now agent.service" in gone.stdout
    assert not unit.exists() and not dropin.parent.exists()
    assert config.exists() and secret.exists()  # config and secrets stay


def test_install_without_sources_enables_but_does_not_start(tmp_path):
    out = install(tmp_path / "root")
    assert out.returncode == 0, out.stderr
    assert "would run: systemctl enable agent.service" in out.stdout
    assert "not started" in out.stdout and "[[sources]]" in out.stdout


def test_install_rejects_bad_arguments_in_one_line(tmp_path):
    assert "expected ID=URI" in one_error_line(install(tmp_path, "-s", "nouri"))
    assert "not a number" in one_error_line(install(tmp_path, "--broker", "h:x"))
    missing = one_error_line(install(tmp_path, "--mqtt-password-file", str(tmp_path / "none")))
    assert "--mqtt-password-file" in missing
    if os.geteuid() != 0:
        assert "needs root" in one_error_line(run("service", "install"))


def test_dry_run_changes_nothing(tmp_path):
    out = install(tmp_path / "root", "--dry-run", "-s", "a=0")
    assert out.returncode == 0, out.stderr
    assert "would write /etc/systemd/system/agent.service" in out.stdout
    assert not (tmp_path / "root").exists()


def test_mqtt_password_from_a_systemd_credential(tmp_path, monkeypatch):
    from agent.config import AgentConfig
    from agent.publish.mqtt import read_password

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.delenv("AGENT_MQTT_PASSWORD", raising=False)
    assert read_password(AgentConfig()) == "s3cret"
    monkeypatch.setenv("AGENT_MQTT_PASSWORD", "from-env")  # agent.env wins over the credential
    assert read_password(AgentConfig()) == "from-env"


def test_an_agent_under_a_protected_home_is_refused(tmp_path):
    hidden = tmp_path / "agent-in-home"
    hidden.write_text("#!/root/venv/bin/python\nimport agent\n")
    message = hidden_from_service(hidden)
    assert message and "/root/venv/bin/python" in message and "ProtectHome" in message
    visible = tmp_path / "agent-in-opt"
    visible.write_text("#!/usr/bin/env python3\n")
    assert hidden_from_service(visible) is None
