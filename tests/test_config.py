import json
import subprocess
import sys

import pytest

from agent.config import AgentConfig, load_config
from agent.errors import ConfigError


def test_defaults_without_file():
    cfg = load_config()
    assert cfg.models.default == "efficientnet_lite0"
    assert cfg.models.providers == ["tensorrt", "cuda", "cpu"]
    assert cfg.models_dir == cfg.state_dir / "models"


def test_file_then_env_override(tmp_path, monkeypatch):
    path = tmp_path / "agent.toml"
    path.write_text('device_id = "cam-7"\n[models]\nmax_batch = 8\nintra_threads = 1\n')
    monkeypatch.setenv("AGENT_MODELS__MAX_BATCH", "4")
    cfg = load_config(path)
    assert cfg.device_id == "cam-7"
    assert cfg.models.max_batch == 4  # env beats the file
    assert cfg.models.intra_threads == 1  # the rest of the section survives the env merge


def test_config_path_from_env(tmp_path, monkeypatch):
    path = tmp_path / "agent.toml"
    path.write_text('device_id = "from-env-path"\n')
    monkeypatch.setenv("AGENT_CONFIG", str(path))
    assert load_config().device_id == "from-env-path"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[models]\nbogus = 1\n", "models.bogus"),
        ("unknown_top = 1\n", "unknown_top"),
        ("[models]\nmax_batch = 0\n", "models.max_batch"),
        ('[models]\nproviders = ["npu"]\n', "models.providers"),
        ('device_id = "shelf/#"\n', "device_id"),
        ('device_id = "cam+1"\n', "device_id"),
        ('state_dir = ""\n', "state_dir"),
        ('[mqtt]\ntopic_prefix = "site/+/agents"\n', "mqtt.topic_prefix"),
        ("[match]\nthreshold = 0.3\nunknown_threshold = 0.5\n", "above threshold"),
        ('[[sources]]\nid = "c"\nuri = "0"\nreconnect_min_s = 60\n', "reconnect_min_s"),
    ],
)
def test_bad_keys_are_named(tmp_path, text, needle):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path)


def test_bad_env_key_is_named(monkeypatch):
    monkeypatch.setenv("AGENT_MODELS__NOPE", "1")
    with pytest.raises(ConfigError, match=r"models\.nope"):
        load_config()


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[models\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_schema_has_descriptions():
    schema = AgentConfig.model_json_schema()
    models = schema["$defs"]["ModelsConfig"]
    assert models["additionalProperties"] is False
    assert "description" in models["properties"]["max_batch"]


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_config_show_and_schema(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('device_id = "shown"\n')
    out = run_cli("--config", str(path), "config", "show")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["device_id"] == "shown"
    schema = run_cli("config", "schema")
    assert json.loads(schema.stdout)["title"] == "AgentConfig"


def test_cli_bad_config_key_one_line_nonzero(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text("[models]\nbogus = 1\n")
    out = run_cli("--config", str(path), "config", "show")
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "models.bogus" in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in out.stderr


def test_every_config_field_has_a_description():
    """The schema (`agent config schema`) documents every key, as the README promises."""
    import typing

    from pydantic import BaseModel

    from agent.config import AgentConfig

    missing = []

    def sections(annotation) -> list[type[BaseModel]]:
        found = [a for arg in typing.get_args(annotation) for a in sections(arg)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.append(annotation)
        return found

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            subs = sections(field.annotation)
            if not (field.description or (subs and all(s.__doc__ for s in subs))):
                missing.append(prefix + name)
            for sub in subs:
                walk(sub, f"{prefix}{name}.")

    walk(AgentConfig, "")
    assert not missing, missing


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("AGENT_SOURCES", "garbage", "are JSON"),
        ("AGENT_MODELS__PROVIDERS", "cuda", "are JSON"),
        ("AGENT_STATE_DIR", "", "state_dir"),
        ("AGENT_DEVICE_ID", "cam#1", "device_id"),
    ],
)  # fmt: skip
def test_bad_environment_values_are_one_line_errors(monkeypatch, env, value, needle):
    from tests.test_cli import one_error_line, run

    monkeypatch.setenv(env, value)
    assert needle in one_error_line(run("config", "show"))


def test_non_utf8_config_and_bad_names_are_one_line_errors(tmp_path):
    from tests.test_cli import one_error_line, run

    config = tmp_path / "agent.toml"
    config.write_bytes(b'device_id = "\xff\xfe"\n')
    assert "not UTF-8" in one_error_line(run("-c", str(config), "config", "show"))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    line = one_error_line(run("models", "import", str(onnx), "--as", "../../escape"))
    assert "use letters, digits" in line and not (tmp_path.parent / "escape.toml").exists()
    line = one_error_line(run("service", "install", "--config-dir", "relative/etc", "--dry-run"))
    assert "absolute" in line
