"""The Kafka security settings: a half-configured connection is refused by name at start,
never left to fail later as a timeout that names nothing."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.settings import CommonSettings, InvalidSetting, get_settings


def _settings(**kw: str) -> CommonSettings:
    return CommonSettings(kafka_bootstrap="k:9092", database_url="-", **kw)  # type: ignore[arg-type]


def test_plaintext_adds_no_options() -> None:
    assert _settings().kafka_options() == {}


def test_sasl_ssl_gives_every_client_tls_and_the_credentials(tmp_path: Path) -> None:
    options = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="meter",
        kafka_sasl_password="s3cret",
    ).kafka_options()

    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "meter",
        "sasl_plain_password": "s3cret",
    }


def test_the_password_is_not_shown_with_the_settings() -> None:
    s = _settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="pw"
    )
    assert "pw" not in repr(s)
    assert s.as_env()["METERLINE_KAFKA_SASL_PASSWORD"] == "pw"  # a subprocess still gets it


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "METERLINE_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "METERLINE_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "use SASL_SSL or"),
        ({"kafka_ssl_cafile": "/etc/hostname"}, "METERLINE_KAFKA_SSL_CAFILE is set, but"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"},
            "METERLINE_KAFKA_SSL_CAFILE: no such file '/no/such/ca.pem'",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/etc/hostname"},
            "METERLINE_KAFKA_SSL_CERTFILE and METERLINE_KAFKA_SSL_KEYFILE go together",
        ),
    ],
)
def test_a_half_configured_connection_is_refused_by_name(given: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        _settings(**given)


def test_a_bad_variable_stops_a_service_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")

    class Fresh(CommonSettings):  # get_settings caches per class: a class of this test's own
        pass

    with pytest.raises(InvalidSetting) as refused:
        get_settings(Fresh)
    assert str(refused.value).startswith(
        "METERLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs METERLINE_KAFKA_SASL_USERNAME"
    )


def test_a_file_that_is_no_pem_is_refused_by_name(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is no certificate\n")
    with pytest.raises(ValidationError, match="METERLINE_KAFKA_SSL_CAFILE .*no CA certificates"):
        _settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(not_pem))
    with pytest.raises(ValidationError, match="METERLINE_KAFKA_SSL_CERTFILE / .*not a PEM"):
        _settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=str(not_pem),
            kafka_ssl_keyfile=str(not_pem),
        )
