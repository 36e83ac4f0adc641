"""Print the agent's match events from an MQTT broker: the README's example subscriber.

    python examples/subscriber.py --host mqtt.local            # every agent: agent/+/match
    python examples/subscriber.py --topic agent/shelf-1/match --count 10

Delivery is at least once (the agent re-sends what the broker did not acknowledge), so events
are deduplicated by `event_id`. A persistent session (fixed client id, clean_session False)
means the broker keeps QoS 1 events for this subscriber while it is away.
"""

from __future__ import annotations

import argparse
import json
import sys

import paho.mqtt.client as mqtt


def main() -> None:
    parser = argparse.ArgumentParser(description="Print agent match events.")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--topic", default="agent/+/match")
    parser.add_argument("--client-id", default="agent-events-printer")
    parser.add_argument("--count", type=int, default=0, help="Stop after N events (0: never).")
    args = parser.parse_args()

    seen: set[str] = set()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        print(f"subscribed to {args.topic} on {args.host}:{args.port}", file=sys.stderr, flush=True)

    def on_message(client, userdata, msg):
        event = json.loads(msg.payload)
        if event["event_id"] in seen:
            return
        seen.add(event["event_id"])
        who = event["identity"] or "unknown"
        print(f"{event['device_id']} {event['source_id']} frame {event['frame_index']}: "
              f"{who} {event['score']:.3f}", flush=True)  # fmt: skip
        if args.count and len(seen) >= args.count:
            client.disconnect()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         clean_session=False)  # fmt: skip
    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(args.host, args.port)
    client.loop_forever()


if __name__ == "__main__":
    main()
