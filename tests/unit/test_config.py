"""Flags over DISPATCHD_* environment over defaults, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd.config import Config, ConfigError, build_parser, load


def test_defaults() -> None:
    c = load([], env={})
    assert c == Config()
    assert (c.listen, c.drain_grace, c.max_payload_bytes, c.default_width) == (
        "127.0.0.1:50051",
        25.0,
        1 << 20,
        10,
    )
    assert c.data_dir is None


def test_environment_sets_and_flags_win() -> None:
    env = {
        "DISPATCHD_LISTEN": "0.0.0.0:7000",
        "DISPATCHD_DEFAULT_WIDTH": "3",
        "DISPATCHD_DATA_DIR": "/tmp/x",
    }
    c = load([], env=env)
    assert (c.listen, c.default_width, c.data_dir) == ("0.0.0.0:7000", 3, Path("/tmp/x"))
    c = load(["--default-width", "5", "--listen", "127.0.0.1:1"], env=env)
    assert (c.listen, c.default_width) == ("127.0.0.1:1", 5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--drain-grace", "-1"], "--drain-grace"),
        (["--max-payload-bytes", "0"], "--max-payload-bytes"),
        (["--default-width", "-2"], "--default-width"),
        (["--default-lease", "0.5"], "--default-lease"),
        (["--log-level", "loud"], "--log-level"),
        (["--listen", "nowhere"], "--listen"),
        (["--listen", "host:99999"], "--listen"),
        (["--log-format", "xml"], "--log-format"),
        (["--metrics-listen", "9464"], "--metrics-listen"),
        (["--metrics-listen", "localhost:http"], "--metrics-listen"),
        (["--metrics-max-queues", "0"], "--metrics-max-queues"),
        (["--http-max-connections", "0"], "--http-max-connections"),
        (["--http-max-connections", "10001"], "--http-max-connections"),
        (["--max-batch-bytes", "0"], "--max-batch-bytes"),
        (["--max-batch-bytes", str(2 << 30)], "--max-batch-bytes"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(argv, env={})


def test_bad_environment_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bad environment value"):
        load([], env={"DISPATCHD_DEFAULT_WIDTH": "ten"})


def test_config_is_frozen() -> None:
    c = Config()
    with pytest.raises(AttributeError):
        c.listen = "x"  # type: ignore[misc]


def test_observability_flags_defaults_environment_and_off() -> None:
    c = load([], env={})
    assert (c.metrics_listen, c.log_format, c.metrics_max_queues) == ("127.0.0.1:9464", "text", 100)
    assert c.metrics_enabled
    env = {
        "DISPATCHD_METRICS_LISTEN": "0.0.0.0:9100",
        "DISPATCHD_LOG_FORMAT": "json",
        "DISPATCHD_METRICS_MAX_QUEUES": "7",
    }
    c = load([], env=env)
    assert (c.metrics_listen, c.log_format, c.metrics_max_queues) == ("0.0.0.0:9100", "json", 7)
    c = load(["--metrics-listen", "0", "--log-format", "text"], env=env)
    assert (c.metrics_listen, c.log_format, c.metrics_enabled) == ("0", "text", False)


def test_security_flags_and_environment() -> None:
    env = {"DISPATCHD_TLS_CERT": "/tls/tls.crt", "DISPATCHD_TLS_KEY": "/tls/tls.key"}
    c = load(["--auth-tokens", "/etc/tokens", "--health-listen", "0.0.0.0:8081"], env=env)
    assert (c.tls_cert, c.tls_key, c.tls_client_ca) == (
        Path("/tls/tls.crt"),
        Path("/tls/tls.key"),
        None,
    )
    assert (c.auth_tokens, c.health_listen) == (Path("/etc/tokens"), "0.0.0.0:8081")
    assert load([], env={}).tls_cert is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-key", "k.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "ca.pem"], "--tls-client-ca"),
        (["--health-listen", "8081"], "--health-listen must be host:port"),
    ],
)
def test_security_flags_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(argv, env={})


def test_the_message_bound_follows_the_payload_and_batch_caps() -> None:
    mib = 1 << 20
    assert Config().max_message_bytes == 20 * mib  # 16 MiB of batch + 4 MiB headroom
    c = load(["--max-batch-bytes", str(2 * mib)], env={"DISPATCHD_MAX_PAYLOAD_BYTES": "1024"})
    assert (c.max_batch_bytes, c.max_message_bytes) == (2 * mib, 6 * mib)
    # A payload cap above the batch cap: one job at the cap still fits a message.
    c = load(["--max-payload-bytes", str(32 * mib)], env={})
    assert c.max_message_bytes == 36 * mib


def test_http_push_settings_from_flags_and_environment() -> None:
    assert (Config().http_max_connections, Config().http_ca_bundle) == (100, None)
    env = {"DISPATCHD_HTTP_MAX_CONNECTIONS": "8", "DISPATCHD_HTTP_CA_BUNDLE": "/etc/ca.pem"}
    c = load([], env=env)
    assert (c.http_max_connections, c.http_ca_bundle) == (8, Path("/etc/ca.pem"))
    c = load(["--http-max-connections", "3", "--http-ca-bundle", "/x.pem"], env=env)
    assert (c.http_max_connections, c.http_ca_bundle) == (3, Path("/x.pem"))


def test_http_listen_default_env_flag_and_off() -> None:
    c = load([], env={})
    assert (c.http_listen, c.http_enabled) == ("127.0.0.1:8080", True)
    c = load([], env={"DISPATCHD_HTTP_LISTEN": "0.0.0.0:8081"})
    assert c.http_listen == "0.0.0.0:8081"
    c = load(["--http-listen", "0"], env={"DISPATCHD_HTTP_LISTEN": "0.0.0.0:8081"})
    assert (c.http_listen, c.http_enabled) == ("0", False)
    with pytest.raises(ConfigError, match="--http-listen"):
        load(["--http-listen", "8080"], env={})


def test_help_says_the_data_dir_holds_the_journal_too() -> None:
    help_text = " ".join(build_parser({}).format_help().split())
    assert "--data-dir DATA_DIR directory for the journal and the drain snapshot" in help_text


def test_server_bounds_from_flags_and_environment() -> None:
    assert (Config().max_queues, Config().max_pending_total) == (10_000, 0)
    env = {"DISPATCHD_MAX_QUEUES": "50", "DISPATCHD_MAX_PENDING_TOTAL": "1000"}
    c = load([], env=env)
    assert (c.max_queues, c.max_pending_total) == (50, 1000)
    assert load(["--max-queues", "0"], env=env).max_queues == 0
    with pytest.raises(ConfigError, match="--max-queues"):
        load(["--max-queues", "-1"], env={})
    with pytest.raises(ConfigError, match="--max-pending-total"):
        load(["--max-pending-total", "-5"], env={})
