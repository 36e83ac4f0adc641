"""Keeps systemd and `agent status` informed while a TensorRT engine is being built.

A build blocks the thread that opens the session (start-up, or a gallery reload that changes the
model) for minutes on a Jetson. Meanwhile this thread sends WATCHDOG and EXTEND_TIMEOUT_USEC, so
systemd neither kills the agent as hung nor fails its start, and refreshes the status file.
Outside builds it sends nothing: the main loop's own pings are what catch a real hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.ops.sdnotify import SystemdNotifier
from agent.runtime.session import EngineBuild, engine_builds

log = logging.getLogger(__name__)


class EngineBuildWatch:
    def __init__(
        self,
        notifier: SystemdNotifier,
        on_build: Callable[[list[EngineBuild]], None],
        period_s: float = 5.0,
    ):
        self.notifier = notifier
        self.on_build = on_build
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="engine-build-watch", daemon=True)

    def start(self) -> EngineBuildWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.period_s + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            builds = engine_builds()
            if not builds:
                continue
            ages = ", ".join(f"{b.model} ({time.time() - b.started_at:.0f} s)" for b in builds)
            self.notifier.notify(
                "WATCHDOG=1",
                f"EXTEND_TIMEOUT_USEC={int(self.period_s * 4 * 1e6)}",
                f"STATUS=building TensorRT engine: {ages}",
            )
            try:
                self.on_build(builds)
            except Exception:  # a status write must not end the watch
                log.exception("engine build status update failed")
