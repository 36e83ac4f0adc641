"""Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).

One device per agent. Per source: a sensor of the last decision (identity, or `unknown`, with
score, margin, track, unknown id, time and snapshot topic as attributes, from the retained
`<prefix>/<source>/last`), a sensor of its processed frames per second and one of its health
(from `<prefix>/metrics` and the retained `<prefix>/health`), and, with `mqtt.snapshots`, a
camera showing the last decided crop (`<prefix>/<source>/snapshot`). Every entity is available
while the retained `<prefix>/status` says `online`. Discovery configs are retained; those of
sources no longer configured are cleared with an empty retained payload, which removes them.
"""

from __future__ import annotations

import json
import re

from agent import __version__
from agent.config import AgentConfig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def discovery(cfg: AgentConfig, source_ids: list[str]) -> dict[str, dict]:
    """Discovery topic -> config payload, for every entity of these sources."""
    prefix, node = cfg.topic_prefix, _slug(cfg.device_id)
    device = {
        "identifiers": [f"agent_{node}"],
        "name": f"Embedding agent {cfg.device_id}",
        "model": "edge embedding agent",
        "manufacturer": "agent",
        "sw_version": __version__,
    }
    availability = [
        {
            "topic": f"{prefix}/status",
            "payload_available": "online",
            "payload_not_available": "offline",
            "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
        }
    ]
    out: dict[str, dict] = {}
    base = cfg.homeassistant.discovery_prefix
    for sid in source_ids:
        key = f"{node}_{_slug(sid)}"
        common = {"device": device, "availability": availability}
        index = f"['{sid}']"
        out[f"{base}/sensor/{node}/{_slug(sid)}_identity/config"] = {
            **common,
            "name": f"{sid} identity",
            "unique_id": f"{key}_identity",
            "state_topic": f"{prefix}/{sid}/last",
            "value_template": "{{ value_json.identity }}",
            "json_attributes_topic": f"{prefix}/{sid}/last",
            "icon": "mdi:account-search",
        }
        out[f"{base}/sensor/{node}/{_slug(sid)}_fps/config"] = {
            **common,
            "name": f"{sid} fps",
            "unique_id": f"{key}_fps",
            "state_topic": f"{prefix}/metrics",
            "value_template": f"{{{{ value_json.sources{index}.fps_processed }}}}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        }
        out[f"{base}/sensor/{node}/{_slug(sid)}_health/config"] = {
            **common,
            "name": f"{sid} health",
            "unique_id": f"{key}_health",
            "state_topic": f"{prefix}/health",
            "value_template": f"{{{{ value_json.sources{index}.health }}}}",
            "entity_category": "diagnostic",
        }
        if cfg.mqtt.snapshots:
            out[f"{base}/camera/{node}/{_slug(sid)}_snapshot/config"] = {
                **common,
                "name": f"{sid} snapshot",
                "unique_id": f"{key}_snapshot",
                "topic": f"{prefix}/{sid}/snapshot",
            }
    return out


def payloads(cfg: AgentConfig, source_ids: list[str], announced: list[str]) -> dict[str, bytes]:
    """What to publish (retained) on connect: each entity's config, and an empty payload for
    each topic announced before whose source is gone."""
    configs = {
        topic: json.dumps(body).encode() for topic, body in discovery(cfg, source_ids).items()
    }
    return configs | {topic: b"" for topic in announced if topic not in configs}
