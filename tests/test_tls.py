"""STARTTLS on a real socket: offered when configured, negotiated by smtplib and openssl, recorded, reloaded.

Certificates are made at test time with ``cryptography``.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import signal
import smtplib
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inbound.config import TlsSettings, load_settings
from inbound.edge.tls import TlsContexts
from inbound.errors import ConfigError

from .edge_harness import Client, EdgeServers, Server, any_certificate
from .harness import InboundProcess, WebhookReceiver, run_cli, smtp_port_of, stream_toml, wait_for, write_config
from .test_edge_input import proxy_v1


def make_certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files in *directory*."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def served_name(settings_port: int) -> str:
    """The common name of the certificate the edge on *settings_port* presents now."""
    with smtplib.SMTP("127.0.0.1", settings_port, timeout=10) as smtp:
        smtp.starttls(context=any_certificate())
        der = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert der is not None
    return str(x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture
def tls(tmp_path: Path) -> TlsSettings:
    cert_file, key_file = make_certificate(tmp_path / "tls", "mx.test.example")
    return TlsSettings(cert_file, key_file)


def test_starttls_is_offered_only_when_configured(make_server: Callable[..., Server], tls: TlsSettings) -> None:
    for settings, offered in ((make_server()[0], False), (make_server(tls=tls)[0], True)):
        with smtplib.SMTP("127.0.0.1", settings.port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            assert smtp.has_extn("starttls") is offered


def test_a_message_over_tls_records_version_and_cipher(make_server: Callable[..., Server], tls: TlsSettings) -> None:
    settings, spool = make_server(tls=tls)
    with smtplib.SMTP("127.0.0.1", settings.port, timeout=10) as smtp:
        assert smtp.starttls(context=any_certificate())[0] == 220
        smtp.sendmail("a@sender.test", ["x@in.test"], b"Subject: secret\r\n\r\nhi\r\n")
    (entry,) = list(spool.entries())
    envelope = entry.envelope
    assert envelope.tls
    assert envelope.tls_version in ("TLSv1.2", "TLSv1.3")
    assert envelope.tls_cipher
    received = entry.message.split(b"\r\nSubject:")[0].decode()
    assert "with ESMTPS id" in received
    assert f"(using {envelope.tls_version} with cipher {envelope.tls_cipher})" in received


@pytest.mark.e2e  # runs openssl as a process
def test_openssl_s_client_negotiates(make_server: Callable[..., Server], tls: TlsSettings) -> None:
    settings, _ = make_server(tls=tls)
    result = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{settings.port}", "-brief"],
        input=b"QUIT\r\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert "CONNECTION ESTABLISHED" in output, output
    assert "Protocol version: TLSv1." in output, output


def test_require_tls_refuses_mail_in_clear_text(make_server: Callable[..., Server], tls: TlsSettings) -> None:
    required = TlsSettings(tls.cert_file, tls.key_file, require_tls=True)
    settings, _ = make_server(tls=required)
    client = Client(settings)
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"530 5.7.0 Must issue a STARTTLS command first")
    assert client.say(b"STARTTLS\r\n").startswith(b"220")
    client.starttls(any_certificate())
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    client.close()


def test_commands_pipelined_before_the_handshake_are_discarded(
    make_server: Callable[..., Server], tls: TlsSettings
) -> None:
    """CVE-2024-34083: plain-text commands sent behind STARTTLS must never run inside the TLS session."""
    settings, spool = make_server(tls=tls)
    client = Client(settings)
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\n").startswith(b"220")
    client.starttls(any_certificate())
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"RCPT TO:<x@in.test>\r\n").startswith(b"503")  # no MAIL was given inside TLS
    client.close()
    assert list(spool.entries()) == []


def test_behind_a_load_balancer_starttls_keeps_the_real_client(make_server: EdgeServers, tls: TlsSettings) -> None:
    """aiosmtpd starts a new session after STARTTLS: the PROXY header's client was lost with the old one,
    and the load balancer's address went into the Received: header, the envelope and the sender checks."""
    settings, spool = make_server(proxy_protocol=True, tls=tls)
    client = Client(settings, proxy=proxy_v1("203.0.113.7"))
    client.begin_tls()
    client.begin_data()
    assert client.say(b"Subject: via lb, encrypted\r\n\r\nhi\r\n.\r\n").startswith(b"250")
    client.close()
    (entry,) = list(spool.entries())
    assert entry.envelope.tls
    assert entry.envelope.client_address == "203.0.113.7:56324"
    assert entry.message.startswith(b"Received: from client.test ([203.0.113.7])")


def test_starttls_inside_tls_is_refused_and_the_session_goes_on(make_server: EdgeServers, tls: TlsSettings) -> None:
    """aiosmtpd answered 220 and began a second handshake inside the first."""
    settings, _ = make_server(tls=tls)
    client = Client(settings)
    client.begin_tls()
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"STARTTLS\r\n") == b"503 5.5.1 Error: TLS already active\r\n"
    assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    client.close()


def test_auth_is_neither_advertised_nor_offered(
    make_server: EdgeServers, tls: TlsSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """inbound authenticates nobody, but aiosmtpd advertised AUTH LOGIN PLAIN inside TLS, which always
    failed, and an over-long answer to its challenge was logged as a bug of ours, with a traceback."""
    settings, _ = make_server(tls=tls)
    client = Client(settings)
    client.begin_tls()
    hello = client.say(b"EHLO client.test\r\n")
    assert hello.startswith(b"250-mx.test.example")
    assert b"AUTH" not in hello
    with caplog.at_level(logging.INFO):
        assert client.say(b"AUTH LOGIN\r\n") == b'500 5.5.2 Error: command "AUTH" not recognized\r\n'
        assert client.say(b"A" * 10_000 + b"\r\n").startswith(b"500 5.5.2 Command line too long")
    assert b"AUTH" not in client.say(b"HELP\r\n")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    client.close()


@pytest.mark.parametrize("how", ["not-tls", "no-common-version", "hang-up"])
def test_a_failed_handshake_is_the_client_s_and_logged_without_a_traceback(
    make_server: EdgeServers, tls: TlsSettings, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each was logged at ERROR with a traceback, as if it were a bug of ours."""
    settings, _ = make_server(tls=TlsSettings(tls.cert_file, tls.key_file, min_version="TLSv1.3"))
    limits = make_server.handlers[-1].limits
    with caplog.at_level(logging.INFO):
        client = Client(settings)
        assert client.say(b"EHLO client.test\r\n").startswith(b"250")
        assert client.say(b"STARTTLS\r\n").startswith(b"220")
        if how == "not-tls":
            client.sock.sendall(b"EHLO this is no ClientHello\r\n")
        elif how == "no-common-version":
            older = any_certificate()
            older.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises(ssl.SSLError):
                older.wrap_socket(client.sock, server_hostname="mx.test.example")
        client.close()
        wait_for(lambda: limits.total == 0, timeout=10, what="the edge to close the connection")
    (line,) = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert line.startswith("stage=receive closed client=127.0.0.1: TLS handshake failed: ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01"], ids=["silent", "part-of-a-client-hello"])
def test_a_stalled_handshake_is_cut_at_the_idle_timeout_and_frees_its_place(
    make_server: EdgeServers, tls: TlsSettings, sent: bytes
) -> None:
    """asyncio never tells a protocol that its connection closed mid-handshake: closed by the idle timeout,
    the connection stayed counted for ever, its session pending (three locked an address out)."""
    settings, _ = make_server(tls=tls, command_timeout=0.5, max_connections_per_ip=1)
    limits = make_server.handlers[-1].limits
    stalled = Client(settings)
    assert stalled.say(b"EHLO client.test\r\n").startswith(b"250")
    assert stalled.say(b"STARTTLS\r\n").startswith(b"220")
    stalled.sock.sendall(sent)
    wait_for(lambda: limits.total == 0, timeout=10, what="the stalled connection to be cut")
    again = Client(settings)
    assert again.greeting.startswith(b"220")
    again.close()
    stalled.close()


def test_reload_takes_renewed_files_and_keeps_the_old_on_a_bad_one(
    make_server: EdgeServers, tls: TlsSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, _ = make_server(tls=tls)
    assert served_name(settings.port) == "mx.test.example"
    contexts = make_server.handlers[-1].tls
    assert isinstance(contexts, TlsContexts)
    renewed_cert, renewed_key = make_certificate(tmp_path / "renewed", "renewed.test.example")
    shutil.copy(renewed_cert, tls.cert_file)
    shutil.copy(renewed_key, tls.key_file)
    assert contexts.reload()
    assert served_name(settings.port) == "renewed.test.example"
    tls.key_file.write_text("half-written by a renewal job")
    assert not contexts.reload()
    assert "TLS reload failed, keeping the certificate in use" in caplog.text
    assert served_name(settings.port) == "renewed.test.example"


def test_tls_files_are_checked_with_the_configuration(tmp_path: Path, tls: TlsSettings) -> None:
    config = tmp_path / "inbound.toml"
    config.write_text(f'[smtp.tls]\ncert_file = "{tmp_path / "nope.pem"}"\nkey_file = "{tls.key_file}"\n')
    with pytest.raises(ConfigError, match=r"smtp\.tls\.cert_file: .*nope\.pem is missing or not readable"):
        load_settings(config)
    other_cert, _ = make_certificate(tmp_path / "other", "other.test.example")
    config.write_text(f'[smtp.tls]\ncert_file = "{other_cert}"\nkey_file = "{tls.key_file}"\n')
    with pytest.raises(ConfigError, match=r"smtp\.tls\.cert_file: .* make no TLS key pair"):
        load_settings(config)
    files = f'cert_file = "{tls.cert_file}"\nkey_file = "{tls.key_file}"\n'
    config.write_text(f'[smtp.tls]\n{files}min_version = "SSLv3"\n')
    with pytest.raises(ConfigError, match=r"smtp\.tls\.min_version: must be one of TLSv1\.2, TLSv1\.3"):
        load_settings(config)
    config.write_text(f"[smtp.tls]\n{files}" + stream_toml("support", ["*@in.test"], "https://hooks.example.test/"))
    assert load_settings(config).smtp.tls == TlsSettings(tls.cert_file, tls.key_file)


@pytest.mark.e2e
def test_hup_reloads_the_certificate_of_a_running_service(tmp_path: Path, tls: TlsSettings) -> None:
    receiver = WebhookReceiver().start()
    streams = stream_toml("support", ["*@in.test"], receiver.url("/hook"))
    extra = f'[smtp.tls]\ncert_file = "{tls.cert_file}"\nkey_file = "{tls.key_file}"\n'
    config = write_config(tmp_path, streams=streams, extra=extra)
    run_cli("init", config=config)
    service = InboundProcess(config).start()
    try:
        port = smtp_port_of(config)
        assert served_name(port) == "mx.test.example"
        renewed_cert, renewed_key = make_certificate(tmp_path / "renewed", "renewed.test.example")
        shutil.copy(renewed_cert, tls.cert_file)
        shutil.copy(renewed_key, tls.key_file)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "TLS certificate reloaded" in service.log(), 30, "the edge to reload its certificate")
        assert served_name(port) == "renewed.test.example"
        assert service.proc.poll() is None
    finally:
        service.stop()
        receiver.stop()
