"""The local HTTP endpoint of a running agent: Prometheus text parsed by prometheus_client's own
parser, the page in a real browser (Debian's chromium driven by Playwright), and the token."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_support import EXAMPLES, AgentProcess, agent_config
from tests.mqtt_support import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
POLICY = {"cooldown_s": 10.0, "threshold": "auto", "unknown_threshold": "auto",
          "min_margin": "auto"}  # fmt: skip


def running_agent(tmp_path, gallery, http: dict, env: dict | None = None) -> AgentProcess:
    config = agent_config(tmp_path / "state", gallery, http={"enabled": True, **http},
                          match=POLICY, detect={"change_threshold": 0.02})  # fmt: skip
    return AgentProcess(tmp_path, config, "--realtime", "--loop", "-s",
                        f"cam={EXAMPLES / 'camera.mp4'}", env=env)  # fmt: skip


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_prometheus_metrics_parse_and_count_what_the_agent_did(gallery, tmp_path):
    port = free_port()
    agent = running_agent(tmp_path, gallery, {"port": port})
    agent.wait_status(lambda r: r["metrics"] and r["metrics"]["events_produced"] >= 2, 60)
    code, body = get(f"http://127.0.0.1:{port}/metrics")
    agent.stop()
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    assert families["agent_frames"].type == "counter"
    assert samples[("agent_frames_total", (("outcome", "processed"), ("source", "cam")))] > 0
    assert samples[("agent_events_total", ())] >= 2
    latency = families["agent_stage_latency_seconds"]
    assert latency.type == "histogram"
    embed = [s for s in latency.samples if s.labels.get("stage") == "embed"]
    buckets = [s.value for s in embed if s.name.endswith("_bucket")]
    count = next(s.value for s in embed if s.name.endswith("_count"))
    assert buckets == sorted(buckets) and buckets[-1] == count > 0  # cumulative, +Inf = count
    (info,) = families["agent_info"].samples
    assert info.labels["model"].startswith("efficientnet_lite0") and info.value == 1


def test_a_token_guards_the_endpoint_beyond_localhost(gallery, tmp_path):
    port = free_port()
    refused = AgentProcess(tmp_path / "a", agent_config(tmp_path / "a" / "state", gallery,
                           http={"enabled": True, "host": "0.0.0.0", "port": port}),
                           "-s", f"cam={EXAMPLES / 'camera.mp4'}",
                           env={"AGENT_HTTP_TOKEN": ""})  # fmt: skip
    assert refused.wait() == 2
    assert "token" in refused.log() and "Traceback" not in refused.log()
    agent = running_agent(tmp_path / "b", gallery, {"host": "0.0.0.0", "port": port},
                          env={"AGENT_HTTP_TOKEN": "s3cret"})  # fmt: skip
    agent.wait_status(lambda r: r["metrics"] is not None, 60)
    assert get(f"http://127.0.0.1:{port}/api/state")[0] == 401
    assert get(f"http://127.0.0.1:{port}/metrics", token="wrong")[0] == 401
    assert get(f"http://127.0.0.1:{port}/metrics", token="s3cret")[0] == 200
    assert get(f"http://127.0.0.1:{port}/api/state?token=s3cret")[0] == 200
    agent.stop()
    assert "s3cret" not in agent.log()


def test_the_page_shows_sources_decisions_and_the_gallery_in_a_browser(gallery, tmp_path):
    if CHROMIUM is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("AGENT_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message + " and AGENT_REQUIRE_CHROMIUM=1")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    port = free_port()
    agent = running_agent(tmp_path, gallery, {"port": port})
    agent.wait_status(lambda r: r["metrics"] and r["metrics"]["events_produced"] >= 2, 60)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("tr.decision img", timeout=20000)
        page.wait_for_function(
            "[...document.querySelectorAll('tr.decision img')].some(i => i.naturalWidth > 0)",
            timeout=20000,
        )
        first = page.locator("tr.decision").first.inner_text()
        sources = page.locator("#sources tr").first.inner_text()
        cards = page.locator("#gallery .card")
        page.wait_for_function("document.querySelectorAll('#gallery .card img').length == 8")
        names = cards.all_inner_texts()
        browser.close()
    agent.stop()
    identities = {p.name for p in (EXAMPLES / "gallery").iterdir()}
    assert any(name in first for name in identities | {"unknown"}), first
    assert sources.startswith("cam") and "ok" in sources
    assert {n.split(" (")[0] for n in names} == identities
    assert all(u.startswith(f"http://127.0.0.1:{port}/") for u in requests)  # no external assets
