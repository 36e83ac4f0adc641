"""`agent status`: the running agent's last report (written to the state dir every interval)."""

from __future__ import annotations

import json
import os
import sys
import time

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.errors import AgentError


class NotRunning(AgentError):
    exit_code = 3


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_command(
    ctx: typer.Context,
    watch: float = typer.Option(
        0.0, "--watch", "-w", min=0.0, help="Show it again every SECONDS until Ctrl-C."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Health, per-source rates and latencies of the running agent; exit 3 if not running."""
    if not watch:
        _status(ctx, as_json)
        return
    try:
        while True:
            try:
                _status(ctx, as_json)
            except (AgentError, typer.Exit) as exc:  # not running (yet): keep watching
                if isinstance(exc, AgentError):
                    print(str(exc), file=sys.stderr)
            sys.stdout.flush()
            time.sleep(watch)
    except KeyboardInterrupt:
        return


def _status(ctx: typer.Context, as_json: bool) -> None:
    cfg = state(ctx).config
    path = cfg.status_path
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotRunning(
            f"no agent has run with state dir {cfg.state_dir} ({path} missing)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AgentError(f"cannot read {path}: {exc}") from None
    age = time.time() - record["written_at"]
    alive = _alive(record["pid"]) and record["status"]["state"] != "stopped"
    stale = age > 3 * record.get("interval_s", 10) + 5
    record["age_s"] = round(age, 1)
    record["running"] = alive and not stale
    if as_json:
        print_json(record)
    else:
        _print(record)
    if record["status"]["state"] == "stopped":  # a clean stop is news, not an error
        print(f"agent stopped (last report {age:.0f} s ago); exit 3: not running",
              file=sys.stderr)  # fmt: skip
        raise typer.Exit(NotRunning.exit_code)
    if not alive:
        raise NotRunning(f"agent not running (pid {record['pid']}, last report {age:.0f} s ago)")
    if stale:
        raise NotRunning(f"agent pid {record['pid']} has not reported for {age:.0f} s (hung?)")


def _print(record: dict) -> None:
    from rich.table import Table

    st, m = record["status"], record["metrics"]
    for build in st.get("engine_builds", []):
        console.print(
            f"[yellow]building TensorRT engine[/] for {build['model']} "
            f"({time.time() - build['started_at']:.0f} s so far) in {build['cache_dir']}"
        )
    if fleet := st.get("fleet"):
        style = "green" if fleet["state"] == "serving" else "red"
        console.print(
            f"fleet group {fleet['group']}: [{style}]{fleet['state']}[/] version "
            f"{fleet['version'] or '-'} (announced {fleet['announced'] or '-'})"
            + (f"; [red]{fleet['error']}[/]" if fleet["error"] else "")
        )
    if m is None:
        console.print(f"[bold]{st['device_id']}[/] {st['state']}  report "
                      f"{record['age_s']:.0f} s ago")  # fmt: skip
        return
    console.print(
        f"[bold]{st['device_id']}[/] {st['state']}  model {m['model']} on {m['provider']}  "
        f"gallery v{m['gallery_version']} ({m['gallery_size']} vectors)  "
        f"uptime {m['uptime_s']:.0f} s  report {record['age_s']:.0f} s ago"
    )
    table = Table(title="sources")
    for col in ("source", "health", "fps in", "fps done", "in", "done", "reused", "dropped",
                "corrupt", "reconnects"):  # fmt: skip
        table.add_column(col)
    for sid, s in m["sources"].items():
        counts = ("frames_in", "frames_processed", "frames_reused", "frames_dropped",
                  "frames_corrupt", "reconnects")  # fmt: skip
        rates = (f"{s['fps_in']:.1f}", f"{s['fps_processed']:.1f}")
        table.add_row(sid, s["health"], *rates, *(str(s[c]) for c in counts))
    console.print(table)
    lat = Table(title="latency (ms)")
    for col in ("stage", "p50", "p95", "p99", "n"):
        lat.add_column(col)
    for stage, p in m["latency_ms"].items():
        lat.add_row(stage, f"{p['p50']:.1f}", f"{p['p95']:.1f}", f"{p['p99']:.1f}", str(p["n"]))
    console.print(lat)
    hit = m["cache_hit_rate"]
    console.print(
        f"events {m['events_produced']} (suppressed {m['events_suppressed']}), published "
        f"{m['published']}, outbox {m['outbox_backlog']} (dropped {m['outbox_dropped']}), broker "
        f"{'-' if m['broker_connected'] is None else ('up' if m['broker_connected'] else 'DOWN')}, "
        f"cache hits {'-' if hit is None else f'{hit:.0%}'}, cpu {m['cpu_percent']:.0f}%, "
        f"rss {m['rss_mb']:.0f} MB, errors {m['errors'] or 'none'}"
    )
