"""Running the real agent as a subprocess, with its config written as TOML."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import tomli_w

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

EVERY_FRAME = {"cooldown_s": 0.0, "threshold": 0.0, "unknown_threshold": 0.0, "min_margin": 0.0}


def agent_config(state: Path, gallery: Path, **sections) -> dict:
    cfg = {
        "device_id": "testcam",
        "state_dir": str(state),
        "gallery": {"path": str(gallery)},
        "metrics": {"interval_s": 0.5},
        "match": dict(EVERY_FRAME),
        "detect": {"change_threshold": 0.0},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


RUNNING: list[AgentProcess] = []


def kill_leftovers() -> None:
    """Called after each test: a failed test must not leave an agent running."""
    while RUNNING:
        agent = RUNNING.pop()
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(10)


class AgentProcess:
    """`agent run` in a subprocess; stdout JSON lines (events) are collected as they come."""

    def __init__(self, workdir: Path, config: dict, *args: str, env: dict | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "agent.toml"
        self.config_path.write_text(tomli_w.dumps(config))
        self.state = Path(config["state_dir"])
        self.events: list[dict] = []
        self.other_stdout: list[str] = []
        self._lock = threading.Lock()
        self.stderr_path = workdir / f"agent-{time.monotonic_ns()}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(self.config_path), "run", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        RUNNING.append(self)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                self.other_stdout.append(line)
                continue
            with self._lock:
                self.events.append(data)

    def event_ids(self) -> list[str]:
        with self._lock:
            return [e["event_id"] for e in self.events if e.get("type") == "match"]

    def status(self) -> dict | None:
        try:
            return json.loads((self.state / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def wait_status(self, predicate, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.status()
            if record is not None and predicate(record):
                return record
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"status never matched; last: {self.status()}\n{self.log()}")

    def wait_events(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.event_ids()) < n and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        assert len(self.event_ids()) >= n, f"{len(self.event_ids())} < {n} events\n{self.log()}"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        self._stderr.close()
        return rc

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]
