"""The one validated configuration schema of framewatch.

Values come from, lowest precedence first: defaults here, a YAML or TOML file
(``--config`` or ``FRAMEWATCH_CONFIG``), environment variables ``FRAMEWATCH_<FIELD>``
(nested fields joined by ``__``, e.g. ``FRAMEWATCH_KAFKA__BOOTSTRAP_SERVERS``), and
command-line flags. An invalid value stops start-up with :class:`ConfigError`, whose
message names the field, the value and where it came from.
"""

from __future__ import annotations

import contextvars
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from framewatch.errors import FrameWatchError

ENV_PREFIX = "FRAMEWATCH_"
ENV_NESTED_DELIMITER = "__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _given_paths(section: BaseModel, *names: str) -> dict[str, str]:
    """The TLS file options that are set, as the strings the clients take."""
    return {name: str(value) for name in names if (value := getattr(section, name)) is not None}


def _secret_from_file(value: SecretStr | None, path: Path | None, name: str) -> SecretStr | None:
    """A secret given inline or as a file (Docker/Kubernetes secrets); both at once is an error."""
    if path is None:
        return value
    if value is not None:
        raise ValueError(f"set {name} or {name}_file, not both")
    try:
        return SecretStr(path.read_text().rstrip("\r\n"))
    except OSError as exc:
        raise ValueError(f"{name}_file={path} cannot be read: {exc.strerror}") from None


# Kafka's rule for topic names (clients refuse others, at the first use otherwise).
KAFKA_TOPIC_PATTERN = r"^[A-Za-z0-9._\-]{1,249}$"


class KafkaSettings(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    topic: str = Field("framewatch.segments", pattern=KAFKA_TOPIC_PATTERN, description="Input topic (Kafka's legal names: letters, digits, . _ -, at most 249).")
    dlq_topic: str = Field("framewatch.segments.dlq", pattern=KAFKA_TOPIC_PATTERN, description="Dead-letter topic.")
    dlq_timeout_s: float = Field(60.0, gt=0, description="How long a dead-letter write is retried before the worker exits non-zero.")
    group: str = Field("framewatch", min_length=1, description="Consumer group id; workers of one group share partitions.")
    client_id: str = "framewatch-worker"
    # The worker polls on its main thread while decode and inference run elsewhere, so a poll
    # never waits on the engine; max_poll_interval_ms only guards against a wedged process.
    session_timeout_ms: int = Field(10_000, ge=1_000, le=300_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    max_poll_records: int = Field(64, ge=1, le=10_000)
    fetch_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_partition_fetch_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    request_timeout_ms: int = Field(30_000, ge=1_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = Field(None, description="Read sasl_password from this file.")
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _check_timeouts(self) -> KafkaSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms={self.heartbeat_interval_ms} must be at most a third of "
                f"session_timeout_ms={self.session_timeout_ms}"
            )
        for name in ("topic", "dlq_topic"):
            if getattr(self, name) in (".", ".."):
                raise ValueError(f"{name} cannot be '.' or '..' (Kafka refuses them)")
        if self.topic == self.dlq_topic:
            raise ValueError(f"dlq_topic must differ from topic ({self.topic!r})")
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol={self.security_protocol} needs sasl_mechanism")
        self.sasl_password = _secret_from_file(self.sasl_password, self.sasl_password_file, "sasl_password")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments shared by consumers and producers (secrets included)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return {**kwargs, **_given_paths(self, "ssl_cafile", "ssl_certfile", "ssl_keyfile")}


class RedisSettings(_Section):
    url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://", description="rediss:// for TLS.")
    username: str | None = None
    password: SecretStr | None = Field(None, description="Overrides a password in the URL; never logged.")
    password_file: Path | None = Field(None, description="Read password from this file.")
    prefix: str = Field("framewatch", pattern=r"^[A-Za-z0-9_.\-]+$")
    history_maxlen: int = Field(10_000, ge=10, description="Approximate cap of each history stream (MAXLEN ~).")
    alerts_maxlen: int = Field(100_000, ge=10)
    ttl_seconds: int = Field(24 * 3600, ge=60, description="Idle streams' keys expire after this.")
    socket_timeout_s: float = Field(5.0, gt=0)
    cluster: bool = Field(False, description="Redis Cluster: cluster client, batches as plain pipelines (no cross-slot MULTI/EXEC).")
    ssl_ca_certs: Path | None = None
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _read_secrets(self) -> RedisSettings:
        self.password = _secret_from_file(self.password, self.password_file, "password")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Credentials and TLS files in redis-py's keywords (timeouts and retries are the caller's)."""
        kwargs: dict[str, Any] = {}
        if self.username:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        return {**kwargs, **_given_paths(self, "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")}


class DecodeSettings(_Section):
    policy: Literal["grid", "keyframes", "adaptive"] = Field(
        "grid", description="Which frames are decoded and scored: grid (one per 1/sample_fps s of stream time), keyframes (key "
        "frames only, decoded alone), adaptive (keyframes while a stream's EMA is below watch_on, the grid until it falls "
        "below watch_off). docs/operations.md compares them.")
    sample_fps: float = Field(1.0, gt=0, le=120, description="Frames scored per second of stream time (grid).")
    keyframes_only: bool = Field(False, description="Deprecated: policy: keyframes.")
    watch_on: float = Field(0.35, ge=0, le=1, description="adaptive: a stream whose EMA reaches this is decoded on the grid.")
    watch_off: float = Field(0.25, ge=0, le=1, description="adaptive: … until its EMA falls below this.")
    workers: int = Field(2, ge=1, le=64, description="Decode processes; one per core is a good start.")
    hwaccel: str | None = Field(None, description="PyAV hardware decoder, e.g. 'cuda': checked when the worker starts (it refuses to start "
                                "if a clip cannot be decoded on it); a message whose device decoder fails is decoded in software and counted.")
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_frames: int = Field(3_000, ge=1, description="Decoded frames per message before it is rejected.")
    max_pixels: int = Field(4096 * 2304, ge=64, description="Width x height limit of one frame.")
    max_decode_seconds: float = Field(20.0, gt=0, description="Checked between frames; past it plus kill_grace_s the decode process is killed.")
    kill_grace_s: float = Field(5.0, gt=0, description="A decode that runs this long past max_decode_seconds (a stuck decoder) is killed.")
    truncation_tolerance_ms: int = Field(100, ge=0, description="A segment whose video ends this close to its declared duration (or within a frame) is complete.")
    strict: bool = Field(True, description="Reject a message when FFmpeg reports any decoding error (it conceals damage otherwise).")
    max_memory_mb: int = Field(2048, ge=0, description="Address-space cap of each decode process (RLIMIT_AS); 0 = none. "
                               "Not applied with hwaccel (a device context reserves more address space).")

    @model_validator(mode="after")
    def _policy(self) -> DecodeSettings:
        if self.keyframes_only:  # the older switch, kept working
            if "policy" in self.model_fields_set and self.policy != "keyframes":
                raise ValueError(f"keyframes_only is the same as policy: keyframes, but policy is {self.policy}: keep one of them")
            self.policy = "keyframes"
        if self.watch_off > self.watch_on:
            raise ValueError(f"watch_off={self.watch_off} must not exceed watch_on={self.watch_on}")
        return self


class BatchSettings(_Section):
    max_batch: int = Field(32, ge=1, le=1024)
    max_delay_ms: float = Field(50.0, ge=0, le=60_000)
    max_queued_frames: int = Field(512, ge=1, description="Frames waiting for inference before partitions pause.")
    max_inflight_messages: int = Field(256, ge=1, description="Messages polled but not committed before partitions pause.")


class ScoringSettings(_Section):
    ema_half_life_s: float = Field(10.0, gt=0, description="Half-life of the EMA, in stream time.")
    recent_window_s: float = Field(60.0, gt=0, description="Window of max_recent, in stream time.")
    alert_on: float = Field(0.7, gt=0, le=1)
    alert_off: float = Field(0.5, ge=0, lt=1)
    stale_after_s: float = Field(120.0, ge=5, description="A stream with no frame for this long leaves the ranking and its open alert is cleared (reason stale).")

    @model_validator(mode="after")
    def _check_hysteresis(self) -> ScoringSettings:
        if self.alert_off >= self.alert_on:
            raise ValueError(f"alert_off={self.alert_off} must be below alert_on={self.alert_on}")
        return self


class EvidenceSettings(_Section):
    """Evidence for alerts and near misses (docs/review.md): frames as JPEG, in a store of their own."""

    backend: Literal["redis", "local", "none"] = Field(
        "redis", description="Where evidence goes: redis (its own prefix, TTL and memory budget; url below), local (a directory; "
        "one node or a shared volume), none (alerts carry no evidence).")
    redis_url: str | None = Field(None, pattern=r"^(redis|rediss|unix)://", description="Evidence Redis (a separate database or "
                                  "instance keeps it apart from the scores); default: redis.url with redis's credentials.")
    cluster: bool | None = Field(None, description="Whether the evidence Redis is a Redis Cluster; default: redis.cluster "
                                 "for the scores' Redis, false for a separate evidence.redis_url (set it when that is a cluster).")
    prefix: str = Field("framewatch:evidence", pattern=r"^[A-Za-z0-9_.:\-]+$", description="Key prefix of the Redis backend.")
    dir: Path = Field(Path("evidence"), description="Directory of the local backend.")
    retention_s: int = Field(7 * 24 * 3600, ge=60, description="Evidence is deleted this long after it was written, unless a "
                             "moderator labelled its alert: then it is kept until `framewatch feedback export` took it.")
    budget_mb: float = Field(256.0, gt=0, description="The store's size limit: the oldest unlabelled evidence goes first; "
                             "evidence that cannot fit is refused (the alert says so), never the scores.")
    long_side: int = Field(480, ge=64, le=1920, description="Evidence frames are scaled to at most this many pixels on the long side.")
    jpeg_qscale: int = Field(4, ge=2, le=31, description="JPEG quantizer (FFmpeg's -q:v): 2 best, 31 smallest.")
    hold_above: float = Field(0.3, ge=0, le=1, description="The best frame of a stream's window is kept in memory only when it "
                              "scores at least this (the raising frame itself always has its evidence).")
    near_miss_margin: float = Field(0.15, ge=0, le=1, description="A frame whose EMA is within this below scoring.alert_on, "
                                    "while no alert is open, is a near miss (0 = none).")
    near_miss_rate: float = Field(0.2, ge=0, le=1, description="The fraction of near misses queued for review (sampled by a hash "
                                  "of the frame, so a replay samples the same ones).")
    near_miss_cooldown_s: float = Field(60.0, ge=0, description="At most one near miss per stream in this much stream time.")


class FaultSettings(_Section):
    """Fault injection for the reliability suite (tests/reliability); leave at the defaults."""

    infer_delay_ms: float = Field(0.0, ge=0, description="Sleep before every inference batch: an engine slower than the poll interval.")
    infer_fail_after: int | None = Field(None, ge=0, description="The engine raises after this many batches: an engine failure (CUDA, TensorRT).")
    decode_hang_stream: str | None = Field(None, description="Decodes of this stream's messages hang (a stuck decoder that ignores SIGTERM).")
    exit_after_evidence: bool = Field(False, description="The process exits (status 70) right after writing an alert's evidence, before "
                                      "the alert: a worker killed between the two.")


class FrameWatchSettings(BaseSettings):
    """Everything the worker and the tools read at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    model: Path | None = Field(None, description="Model artifact folder (model.onnx + model.json).")
    # auto, onnxruntime, tensorrt, or a plugin's name (framewatch.engines registry); an unknown name
    # is refused when the engine loads, with the registered names.
    backend: str = Field("auto", pattern=r"^[a-z0-9_\-]+$")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads; 0 lets it choose.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_port: int = Field(9108, ge=0, le=65535, description="Prometheus /metrics, /healthz, /readyz; 0 = off.")
    metrics_host: str = "0.0.0.0"
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    decode: DecodeSettings = DecodeSettings()
    batch: BatchSettings = BatchSettings()
    scoring: ScoringSettings = ScoringSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    faults: FaultSettings = FaultSettings()
    shutdown_grace_s: float = Field(25.0, ge=2, description="SIGTERM to exit at most this long (keep it under the orchestrator's grace period).")

    @model_validator(mode="after")
    def _check_across_sections(self) -> FrameWatchSettings:
        if self.scoring.stale_after_s >= self.redis.ttl_seconds:
            raise ValueError(f"scoring.stale_after_s={self.scoring.stale_after_s} must be below redis.ttl_seconds={self.redis.ttl_seconds}: "
                             "a stream's open alert is cleared before its keys expire")
        if self.decode.max_message_bytes > self.kafka.max_partition_fetch_bytes:
            raise ValueError(f"decode.max_message_bytes={self.decode.max_message_bytes} exceeds kafka.max_partition_fetch_bytes="
                             f"{self.kafka.max_partition_fetch_bytes}: a message the input accepts could not be fetched")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags (init kwargs), then the environment, then the file.
        return (init_settings, env_settings, _FileSource(settings_cls, _config_file.get()))


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("framewatch_config_file", default=None)


class ConfigError(FrameWatchError, ValueError):
    """Invalid configuration; the message names each bad field, its value and its source."""


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: use .yaml, .yml, .toml or .json")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.data = read_config_file(path) if path is not None else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def _drop_unset(overrides: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            nested = _drop_unset(value)
            if nested:
                cleaned[key] = nested
        elif value is not None:
            cleaned[key] = value
    return cleaned


def _source_of(loc: tuple[int | str, ...], overrides: dict[str, Any], file_data: dict[str, Any], config_path: Path | None) -> str:
    def lookup(tree: dict[str, Any]) -> bool:
        node: Any = tree
        for part in loc:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    if lookup(overrides):
        return "command line"
    env_name = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p) for p in loc).upper()
    if env_name in os.environ:
        return f"environment {env_name}"
    if config_path is not None and lookup(file_data):
        return f"config file {config_path}"
    return "default"


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> FrameWatchSettings:
    """Build the settings; ``overrides`` are flag values (nested dicts for sections, None = unset)."""
    path = Path(config_file) if config_file else None
    if path is None and os.environ.get(ENV_PREFIX + "CONFIG"):
        path = Path(os.environ[ENV_PREFIX + "CONFIG"])
    flags = _drop_unset(overrides)
    token = _config_file.set(path)
    try:
        return FrameWatchSettings(**flags)
    except ValidationError as exc:
        file_data = read_config_file(path) if path else {}
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if p != "__root__")
            field = ".".join(str(p) for p in loc) or "(settings)"
            value = error.get("input")
            shown = "***" if any("password" in str(p) for p in loc) else repr(mask_url(value) if isinstance(value, str) else value)
            where = _source_of(loc, flags, file_data, path)
            if error["type"] == "value_error":
                problems.append(f"  {field}: {error['msg'].removeprefix('Value error, ')} (from {where})")
            else:
                problems.append(f"  {field} = {shown}: {error['msg']} (from {where})")
        raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from None
    finally:
        _config_file.reset(token)


def redacted(settings: FrameWatchSettings) -> dict[str, Any]:
    """The settings as plain data with every secret masked, for logs and `config show`."""
    data = settings.model_dump(mode="json")
    data["redis"]["url"] = mask_url(settings.redis.url)
    return data


def mask_url(url: str) -> str:
    """A URL with the password of its user-info replaced (redis://user:secret@host → redis://user:***@host)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
