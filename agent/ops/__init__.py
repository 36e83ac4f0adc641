"""Operating the agent: doctor, service install, systemd notifications, engine-build watch."""
