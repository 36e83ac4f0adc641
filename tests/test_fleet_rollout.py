"""Gallery rollout (issue 17), with a real mosquitto, a real HTTP file server and the real agent:
a box catches up from the retained announcement when it starts, swaps a new version in while
its camera runs (no frame lost), and refuses a tampered artefact and a foreign signature while
it keeps serving the version it has."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest

from agent.fleet import keys
from agent.fleet.artefact import Announcement
from tests.agent_support import EXAMPLES, AgentProcess, agent_config
from tests.fleet_support import FileServer
from tests.mqtt_support import Broker, publish_once, require_mosquitto

CLIP = EXAMPLES / "camera.mp4"
GROUP = "shops"


def agent_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


def publish(gallery, key, broker: Broker, to: str, url: str | None = None, *extra: str):
    args = ["gallery", "publish", GROUP, "-g", str(gallery), "--key", str(key), "--to", to,
            "--broker", f"127.0.0.1:{broker.port}", "--json", *extra]  # fmt: skip
    if url:
        args += ["--url", url]
    done = agent_cli(*args)
    assert done.returncode == 0, done.stderr
    return Announcement.model_validate_json(done.stdout)


@pytest.fixture
def broker(tmp_path):
    require_mosquitto()
    b = Broker(tmp_path / "broker", kind="mosquitto").start()
    yield b
    b.stop()


def fleet_box(tmp_path, broker: Broker, public_key: str, name: str = "box") -> AgentProcess:
    mqtt = {"host": "127.0.0.1", "port": broker.port}
    fleet = {"group": GROUP, "public_key": public_key, "startup_wait_s": 10.0}
    config = agent_config(tmp_path / name / "state", tmp_path / name / "no-local-gallery",
                          device_id=name, mqtt=mqtt, fleet=fleet)  # fmt: skip
    return AgentProcess(tmp_path / name, config, "--realtime", "--loop", "-s", f"cam={CLIP}")


def test_a_box_follows_its_group_and_refuses_what_is_not_signed(gallery, tmp_path, broker):
    key = tmp_path / "fleet.pem"
    public = keys.generate(key)
    files = FileServer(tmp_path / "www")
    smaller = tmp_path / "smaller"
    shutil.copytree(gallery, smaller)
    assert agent_cli("gallery", "remove", "Oatly-Oat-Milk", "-g", str(smaller)).returncode == 0
    try:
        # v1 is announced before the box exists: it catches up from the retained message.
        v1 = publish(gallery, key, broker, files.url)
        assert v1.manifest.version == 1 and v1.url.startswith(files.url)
        box = fleet_box(tmp_path, broker, public)
        first = box.wait_status(lambda r: (r["status"].get("fleet") or {}).get("version") == 1
                                and r["metrics"] is not None, 60)  # fmt: skip
        assert first["status"]["fleet"]["state"] == "serving"
        size_v1 = first["metrics"]["gallery_size"]

        # v2 while the camera runs: swapped in, the new size served.
        v2 = publish(smaller, key, broker, files.url)
        assert v2.manifest.version == 2 and v2.manifest.identities == 7
        swapped = box.wait_status(lambda r: r["status"]["fleet"]["version"] == 2
                                  and r["metrics"]["gallery_size"] < size_v1, 60)  # fmt: skip
        assert swapped["status"]["gallery_version"] is not None

        # v3: signed by the fleet key, but the file is not the one the manifest describes.
        tampered = tmp_path / "www" / "tampered.sqlite"
        data = bytearray((tmp_path / "www" / GROUP / "2" / "gallery.sqlite").read_bytes())
        data[len(data) // 2] ^= 0xFF
        tampered.write_bytes(bytes(data))
        manifest = v2.manifest.model_copy(update={"version": 3})
        signed = Announcement(manifest=manifest, url=f"{files.url}/tampered.sqlite",
                              signature=keys.sign(keys.load_private(key),
                                                  manifest.signed_bytes()))  # fmt: skip
        publish_once(broker.port, f"fleet/gallery/{GROUP}", signed.model_dump_json(), retain=True)
        refused = box.wait_status(lambda r: r["status"]["fleet"]["state"] == "refused", 30)
        assert "sha256" in refused["status"]["fleet"]["error"]
        assert refused["status"]["fleet"]["version"] == 2

        # v4: a real artefact, signed with a key the box does not trust.
        other = tmp_path / "other.pem"
        keys.generate(other)
        manifest = v2.manifest.model_copy(update={"version": 4})
        foreign = Announcement(manifest=manifest, url=v2.url,
                               signature=keys.sign(keys.load_private(other),
                                                   manifest.signed_bytes()))  # fmt: skip
        publish_once(broker.port, f"fleet/gallery/{GROUP}", foreign.model_dump_json(), retain=True)
        box.wait_status(lambda r: "signature" in (r["status"]["fleet"]["error"] or ""), 30)

        # Garbage on the topic is refused too, and the box still serves v2.
        publish_once(broker.port, f"fleet/gallery/{GROUP}", b"{not json", retain=True)
        last = box.wait_status(lambda r: "not a gallery announcement"
                               in (r["status"]["fleet"]["error"] or ""), 30)  # fmt: skip
        assert last["status"]["fleet"]["version"] == 2
        assert last["metrics"]["gallery_size"] == swapped["metrics"]["gallery_size"]
        doctor = agent_cli("-c", str(box.config_path), "doctor", "--json")
        checks = {c["name"]: c for c in json.loads(doctor.stdout)}
        fleet, served = checks["fleet"], checks["gallery"]
        assert fleet["level"] == "ok" and "serving version 2" in fleet["detail"]
        assert served["level"] == "ok" and "/fleet/shops/v2" in served["detail"]
        shown = agent_cli("-c", str(box.config_path), "status").stdout
        assert "fleet group shops: refused version 2 (announced" in shown
        assert "not a gallery announcement" in shown

        box.signal(signal.SIGTERM)
        assert box.wait(60) == 0, box.log()
        cam = box.status()["metrics"]["sources"]["cam"]
        assert cam["frames_dropped"] == 0 and cam["frames_corrupt"] == 0
        done = cam["frames_processed"] + cam["frames_reused"]
        # Every frame read was searched, but for at most the one a paced file source had read
        # and was holding until its time when SIGTERM came.
        assert cam["frames_in"] - 1 <= done <= cam["frames_in"], cam
        installed = sorted(p.name for p in (tmp_path / "box/state/fleet" / GROUP).glob("v*"))
        assert installed == ["v1", "v2"]  # the previous version is kept to fall back to
        assert (tmp_path / "box/state/fleet" / GROUP / "current").resolve().name == "v2"
    finally:
        files.close()


def test_publish_puts_the_artefact_over_http_and_versions_go_up(gallery, tmp_path, broker):
    key = tmp_path / "fleet.pem"
    keys.generate(key)
    files = FileServer(tmp_path / "www", token="s3cret")
    try:
        denied = agent_cli("gallery", "publish", GROUP, "-g", str(gallery), "--key", str(key),
                           "--to", files.url, "--broker", f"127.0.0.1:{broker.port}")  # fmt: skip
        assert denied.returncode == 1 and "HTTP 401" in denied.stderr
        env = {**__import__("os").environ, "AGENT_FLEET_UPLOAD_TOKEN": "s3cret"}
        done = agent_cli("gallery", "publish", GROUP, "-g", str(gallery), "--key", str(key),
                         "--to", files.url, "--broker", f"127.0.0.1:{broker.port}", "--json",
                         env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        announced = Announcement.model_validate_json(done.stdout)
        stored = json.loads((tmp_path / "www" / GROUP / "1" / "manifest.json").read_text())
        assert stored["manifest"] == announced.manifest.model_dump(mode="json")
        keys.verify(keys.load_public(keys.public_text(keys.load_private(key))),
                    announced.manifest.signed_bytes(), announced.signature)  # fmt: skip

        again = agent_cli("gallery", "publish", GROUP, "-g", str(gallery), "--key", str(key),
                          "--to", str(tmp_path / "dir"), "--broker", f"127.0.0.1:{broker.port}",
                          "--version", "1")  # fmt: skip
        assert again.returncode == 1 and "not above the announced version 1" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        files.close()


def test_keys_and_bad_input_fail_in_one_line(tmp_path, gallery):
    key = tmp_path / "fleet.pem"
    made = agent_cli("fleet", "keygen", str(key))
    assert made.returncode == 0 and "public_key = " in made.stdout
    assert (key.stat().st_mode & 0o777) == 0o600
    again = agent_cli("fleet", "keygen", str(key))
    assert again.returncode == 1 and "never overwritten" in again.stderr

    not_a_key = tmp_path / "junk.pem"
    not_a_key.write_text("hello")
    bad = agent_cli("gallery", "publish", GROUP, "-g", str(gallery), "--key", str(not_a_key),
                    "--to", str(tmp_path / "out"), "--broker", "127.0.0.1:1")  # fmt: skip
    assert bad.returncode == 1 and "not an unencrypted PEM private key" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    config = tmp_path / "agent.toml"
    config.write_text(f'[fleet]\ngroup = "{GROUP}"\npublic_key = "abc"\n[mqtt]\nhost = "x"\n'
                      f'[[sources]]\nid = "cam"\nuri = "{CLIP}"\n')  # fmt: skip
    refused = agent_cli("-c", str(config), "run", "--duration", "1")
    assert refused.returncode == 2 and "fleet.public_key is not a base64" in refused.stderr


@pytest.mark.parametrize(("blocked", "args", "extra"), [
    ("cryptography", ["fleet", "keygen", "k.pem"], "fleet"),
    ("qdrant_client", ["fleet", "search", "--identity", "x", "--qdrant", "q"], "sink"),
])  # fmt: skip
def test_without_the_extra_a_fleet_command_says_what_to_install(tmp_path, blocked, args, extra):
    code = (f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['agent', *{args!r}]; "
            "from agent.cli import main; main()")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"pip install 'edge-embedding-agent[{extra}]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
