"""`agent service install|uninstall`: the systemd unit, config skeleton and env file on a host.

The files come from the repository's `systemd/` folder (`agent/_systemd` in a wheel). With
`root` other than `/` (or `dry_run`) nothing outside `root` is touched: no user is created and
systemctl is not called; the commands are listed instead.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from agent.atomic import atomic_write_bytes
from agent.config import read_toml
from agent.errors import InputError
from agent.publish.mqtt import CREDENTIAL_NAME as CREDENTIAL

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # agent/
UNIT = "agent.service"
USER = "agent"
TEMPLATE_EXEC = "/opt/agent/bin/agent"
TEMPLATE_CONFIG = "/etc/agent/agent.toml"
STATE_DIR = "/var/lib/agent"
PROTECTED_HOME = (Path("/home"), Path("/root"), Path("/run/user"))


def hidden_from_service(exec_path: Path) -> str | None:
    """Why the unit could not run `exec_path`: it (or its Python) under a ProtectHome path."""
    targets = [exec_path.resolve()]
    try:
        first = exec_path.read_bytes()[:256].split(b"\n")[0].decode(errors="replace")
    except OSError:
        first = ""
    if first.startswith("#!") and first[2:].split():
        targets.append(Path(first[2:].split()[0]).resolve())
    for target in targets:
        for top in PROTECTED_HOME:
            if target == top or top in target.parents:
                return (
                    f"{exec_path} runs {target}, under {top}, which ProtectHome=yes hides from "
                    "the service; install into a venv made from a system Python "
                    "(sudo python3 -m venv /opt/agent)"
                )
    return None


def deploy_file(name: str) -> Path:
    """A file of `systemd/`: `agent/_systemd` in a wheel, the repository's folder in a checkout."""
    wheel_dir = _PACKAGE_DIR / "_systemd"
    folder = wheel_dir if wheel_dir.is_dir() else _PACKAGE_DIR.parent / "systemd"
    return folder / name


def installed_agent() -> Path:
    """The `agent` executable of this installation (the venv's, not whatever PATH finds)."""
    beside = Path(os.path.abspath(sys.executable)).parent / "agent"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("agent")
    if found is None:
        raise InputError("cannot find the `agent` executable; pass --exec /path/to/agent")
    return Path(found).absolute()


def render_unit(exec_path: Path, config_path: Path) -> str:
    text = deploy_file(UNIT).read_text()
    if TEMPLATE_EXEC not in text or TEMPLATE_CONFIG not in text:
        raise InputError(f"{deploy_file(UNIT)} lacks {TEMPLATE_EXEC} or {TEMPLATE_CONFIG}")
    return text.replace(TEMPLATE_EXEC, str(exec_path)).replace(TEMPLATE_CONFIG, str(config_path))


def credential_dropin(password_path: Path) -> str:
    return (
        "# Written by `agent service install --mqtt-password-file`: the broker password as a\n"
        "# systemd credential, read by the agent from $CREDENTIALS_DIRECTORY/mqtt-password.\n"
        f"[Service]\nLoadCredential={CREDENTIAL}:{password_path}\n"
    )


def render_config(sources: list[dict], broker: dict | None, device_id: str | None) -> str:
    """The skeleton with what was given on the command line appended as real TOML."""
    text = deploy_file("agent.toml").read_text()
    extra: dict = {}
    if broker:
        extra["mqtt"] = broker
    if sources:
        extra["sources"] = sources
    if device_id:
        line = tomli_w.dumps({"device_id": device_id}).strip()
        text = text.replace('# device_id = "shelf-cam-01"', line)
    if extra:
        text += "\n# ---- from `agent service install`\n" + tomli_w.dumps(extra)
    return text


@dataclass
class Installer:
    root: Path = Path("/")
    config_dir: Path = Path("/etc/agent")
    unit_dir: Path = Path("/etc/systemd/system")
    dry_run: bool = False
    actions: list[str] = field(default_factory=list)

    @property
    def touches_host(self) -> bool:
        return self.root == Path("/") and not self.dry_run

    def path(self, p: Path) -> Path:
        return self.root / p.relative_to("/")

    @property
    def unit_path(self) -> Path:
        return self.unit_dir / UNIT

    @property
    def dropin_path(self) -> Path:
        return self.unit_dir / f"{UNIT}.d" / "credentials.conf"

    def _write(self, target: Path, data: str, mode: int, keep: bool = False) -> None:
        real = self.path(target)
        if keep and real.exists():
            self.actions.append(f"kept {target} (exists)")
            return
        self.actions.append(f"{'would write' if self.dry_run else 'wrote'} {target}")
        if self.dry_run:
            return
        real.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(real, data.encode())
        real.chmod(mode)

    def _run(self, *cmd: str) -> None:
        self.actions.append(f"{'ran' if self.touches_host else 'would run'}: {' '.join(cmd)}")
        if not self.touches_host:
            return
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise InputError(
                f"`{' '.join(cmd)}` failed: {detail[-1] if detail else done.returncode}"
            )

    def _check_host(self) -> None:
        if not self.touches_host:
            return
        if os.geteuid() != 0:
            raise InputError("installing a system service needs root: run it with sudo")
        if shutil.which("systemctl") is None:
            raise InputError("systemctl not found: this host does not run systemd")

    def install(
        self,
        exec_path: Path,
        sources: list[dict],
        broker: dict | None,
        device_id: str | None,
        password_file: Path | None,
        start: bool,
    ) -> bool:
        """Write the files, enable the unit; start it when asked and the config has sources.

        Returns why the unit was not started, or None when it was.
        """
        self._check_host()
        hidden = hidden_from_service(exec_path)
        if hidden and self.touches_host:
            raise InputError(hidden)
        if hidden:
            self.actions.append(f"warning: {hidden}")
        config = self.config_dir / "agent.toml"
        self._write(self.unit_path, render_unit(exec_path, config), 0o644)
        self._write(config, render_config(sources, broker, device_id), 0o640, keep=True)
        self._write(self.config_dir / "agent.env", deploy_file("agent.env").read_text(), 0o600,
                    keep=True)  # fmt: skip
        if password_file is not None:
            try:
                secret = password_file.read_text()
            except OSError as exc:
                raise InputError(f"--mqtt-password-file {password_file}: {exc.strerror}") from None
            stored = self.config_dir / CREDENTIAL
            self._write(stored, secret, 0o600)
            self._write(self.dropin_path, credential_dropin(stored), 0o644)
        if self.touches_host:
            self._ensure_user()
            os.chown(self.path(config), 0, grp.getgrnam(USER).gr_gid)
            self._ensure_state_dir()
        self._run("systemctl", "daemon-reload")
        reason = self._not_ready(config, sources) if start else "--no-start"
        self._run("systemctl", "enable", *(["--now"] if reason is None else []), UNIT)
        return reason

    def _not_ready(self, config: Path, sources: list[dict]) -> str | None:
        """What keeps the agent from running yet (it would exit 2 and the unit would fail)."""
        from agent.gallery.gallery import Gallery

        real = self.path(config)
        data = read_toml(real) if real.exists() else {"sources": sources}
        if not data.get("sources"):
            return f"{config} has no [[sources]]: add a camera"
        state_dir = Path(data.get("state_dir", STATE_DIR))
        gallery = Path(data.get("gallery", {}).get("path") or state_dir / "gallery")
        if not Gallery.exists(self.path(gallery)):
            return f"no gallery at {gallery} yet: enroll one first"
        return None

    def _ensure_state_dir(self) -> None:
        """/var/lib/agent owned by the service user, so `sudo -u agent agent enroll` works
        before the first start (StateDirectory= would create it only then)."""
        state = Path(STATE_DIR)
        if not state.exists():
            state.mkdir(mode=0o750, parents=True)
            self.actions.append(f"created {state}")
        user = pwd.getpwnam(USER)
        os.chown(state, user.pw_uid, user.pw_gid)

    def _ensure_user(self) -> None:
        try:
            pwd.getpwnam(USER)
            return
        except KeyError:
            pass
        self._run("useradd", "--system", "--user-group", "--home-dir", "/var/lib/agent",
                  "--no-create-home", "--shell", "/usr/sbin/nologin", USER)  # fmt: skip
        self.actions.append(f"created system user {USER}")

    def uninstall(self) -> None:
        """Stop and remove the unit; config and state (gallery, models) stay."""
        self._check_host()
        self._run("systemctl", "disable", "--now", UNIT)
        for target in (self.dropin_path, self.unit_path):
            real = self.path(target)
            if real.exists():
                self.actions.append(f"{'would remove' if self.dry_run else 'removed'} {target}")
                if not self.dry_run:
                    real.unlink()
        dropin_dir = self.path(self.dropin_path.parent)
        if not self.dry_run and dropin_dir.is_dir() and not any(dropin_dir.iterdir()):
            dropin_dir.rmdir()
        self._run("systemctl", "daemon-reload")
