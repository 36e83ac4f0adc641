"""Fleets: signed gallery versions rolled out to many boxes over a retained MQTT topic, and the
match events of every box gathered in one vector database (optional extra `fleet`)."""
