"""Decisions: what a search result means (calibrated thresholds), evidence accumulated per
object over time, one event per object and identity, cool-down, unknown ids."""
