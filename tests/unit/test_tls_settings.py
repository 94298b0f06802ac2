"""Bad TLS files stop the start with exit 2 and a line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.certificates import Authority

from cortex_core.cli import main
from cortex_core.settings import Settings, SettingsError


def assert_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environ: dict[str, str]
) -> None:
    """``cortex-core serve`` refuses ``environ`` with exit 2 before starting anything."""
    monkeypatch.setenv("CORTEX_DATA_DIR", str(tmp_path / "data"))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["serve"]) == 2


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Authority, Path, Path]:
    authority = Authority(tmp_path / "pki")
    server = authority.issue("server", server=True)
    return authority, server.cert, server.key


def test_a_certificate_and_its_key_make_a_tls_port(pki: tuple[Authority, Path, Path]) -> None:
    _, cert, key = pki
    settings = Settings.from_env(
        {"CORTEX_TLS_CERT_FILE": str(cert), "CORTEX_TLS_KEY_FILE": str(key)}
    )
    assert settings.tls_cert_file is not None
    assert settings.tls_cert_file.data == cert.read_bytes()
    assert "PRIVATE KEY" not in repr(settings), "the key never shows in a repr"


@pytest.mark.parametrize(
    ("case", "variable"),
    [
        ("missing cert", "CORTEX_TLS_CERT_FILE"),
        ("cert is not PEM", "CORTEX_TLS_CERT_FILE"),
        ("key is not PEM", "CORTEX_TLS_KEY_FILE"),
        ("key of another certificate", "CORTEX_TLS_KEY_FILE"),
        ("cert without key", "CORTEX_TLS_KEY_FILE"),
        ("client CA without a server certificate", "CORTEX_TLS_CLIENT_CA_FILE"),
        ("client CA is not PEM", "CORTEX_TLS_CLIENT_CA_FILE"),
    ],
)
def test_bad_tls_files_stop_the_start_naming_the_variable(
    pki: tuple[Authority, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    variable: str,
) -> None:
    authority, cert, key = pki
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem file, and not a secret either\n")
    other = authority.issue("other", server=True)
    environ = {
        "missing cert": {
            "CORTEX_TLS_CERT_FILE": str(tmp_path / "nope"),
            "CORTEX_TLS_KEY_FILE": str(key),
        },
        "cert is not PEM": {"CORTEX_TLS_CERT_FILE": str(junk), "CORTEX_TLS_KEY_FILE": str(key)},
        "key is not PEM": {"CORTEX_TLS_CERT_FILE": str(cert), "CORTEX_TLS_KEY_FILE": str(junk)},
        "key of another certificate": {
            "CORTEX_TLS_CERT_FILE": str(cert),
            "CORTEX_TLS_KEY_FILE": str(other.key),
        },
        "cert without key": {"CORTEX_TLS_CERT_FILE": str(cert)},
        "client CA without a server certificate": {
            "CORTEX_TLS_CLIENT_CA_FILE": str(authority.cert)
        },
        "client CA is not PEM": {
            "CORTEX_TLS_CERT_FILE": str(cert),
            "CORTEX_TLS_KEY_FILE": str(key),
            "CORTEX_TLS_CLIENT_CA_FILE": str(junk),
        },
    }[case]
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(environ)
    assert_refused(monkeypatch, tmp_path, environ)
    err = capsys.readouterr().err
    assert variable in err
    assert "PRIVATE KEY" not in err
