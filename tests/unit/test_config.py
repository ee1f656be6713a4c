from __future__ import annotations

from pathlib import Path

import pytest

from framewatch.config import ConfigError, load_settings


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.kafka.topic == "framewatch.segments"
    assert settings.kafka.dlq_topic == "framewatch.segments.dlq"
    assert settings.redis.prefix == "framewatch"


def test_precedence_flags_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(tmp_path, "fw.yaml", "kafka:\n  group: from-file\n  topic: file-topic\nbatch:\n  max_batch: 8\n")
    assert load_settings(config).kafka.group == "from-file"
    monkeypatch.setenv("FRAMEWATCH_KAFKA__GROUP", "from-env")
    settings = load_settings(config)
    assert settings.kafka.group == "from-env"
    assert settings.kafka.topic == "file-topic"  # untouched by env: the file still applies
    settings = load_settings(config, kafka={"group": "from-flag"})
    assert settings.kafka.group == "from-flag"
    assert settings.batch.max_batch == 8
    # A flag left unset (None) does not hide the env or file value.
    assert load_settings(config, kafka={"group": None}).kafka.group == "from-env"


def test_toml_file(tmp_path: Path) -> None:
    config = _write(tmp_path, "fw.toml", "[scoring]\nalert_on = 0.9\nalert_off = 0.2\n")
    assert load_settings(config).scoring.alert_on == 0.9


def test_invalid_value_names_field_value_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEWATCH_BATCH__MAX_BATCH", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "batch.max_batch" in text and "'lots'" in text and "FRAMEWATCH_BATCH__MAX_BATCH" in text


def test_invalid_file_value_names_the_file(tmp_path: Path) -> None:
    config = _write(tmp_path, "fw.yaml", "decode:\n  sample_fps: -1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert "decode.sample_fps" in str(info.value) and "-1" in str(info.value) and str(config) in str(info.value)


def test_unknown_field_is_an_error(tmp_path: Path) -> None:
    config = _write(tmp_path, "fw.yaml", "kafka:\n  bootstrap: x:1\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap"):
        load_settings(config)


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="alert_off"):
        load_settings(scoring={"alert_on": 0.4, "alert_off": 0.5})
    with pytest.raises(ConfigError, match="heartbeat_interval_ms"):
        load_settings(kafka={"session_timeout_ms": 6000, "heartbeat_interval_ms": 3000})


def test_secrets_are_masked_in_errors_and_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(redis={"password": "hunter2"}, kafka={"sasl_password": "s3cret"})
    dumped = str(settings.model_dump(mode="json"))
    assert "hunter2" not in dumped and "s3cret" not in dumped
    assert settings.redis.password is not None and settings.redis.password.get_secret_value() == "hunter2"


def test_cli_reports_bad_config_with_exit_code_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from framewatch.cli.main import main

    monkeypatch.setenv("FRAMEWATCH_METRICS_PORT", "99999")
    assert main(["config", "show"]) == 2
    assert "metrics_port" in capsys.readouterr().err
