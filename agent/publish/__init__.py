"""Getting events out: the durable outbox and one publisher per transport (MQTT, stdout)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.events import StatusEvent
    from agent.metrics import Metrics
    from agent.publish.base import Publisher
    from agent.publish.mqtt import CommandHandler


def make_publisher(
    cfg: AgentConfig,
    initial_status: StatusEvent,
    on_command: CommandHandler | None = None,
    metrics: Metrics | None = None,
    subscriptions: dict[str, Callable[[bytes], None]] | None = None,
) -> Publisher:
    """MQTT when a broker is configured, else JSON lines on stdout; both behind the outbox.
    `subscriptions` (topics to follow) need a broker."""
    from agent.publish.outbox import Outbox

    outbox = Outbox.from_config(cfg)
    if cfg.mqtt.host:
        from agent.publish.mqtt import MqttPublisher

        return MqttPublisher(cfg, outbox, initial_status, on_command, metrics, subscriptions)
    from agent.publish.stdout import StdoutPublisher

    return StdoutPublisher(outbox, metrics=metrics)
