"""pymongo against a secured mongo-sim (`--tls-cert/--tls-key` and `--auth`): SCRAM-SHA-256 and
SCRAM-SHA-1 logins over TLS with a CA made here (the `openssl` CLI), a wrong password
(OperationFailure 18), commands before login (13), a read-only user refused a write and allowed
a change stream, and a plaintext client that never gets through."""

from __future__ import annotations

import subprocess

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from conftest import CLIENT_GUARDS

USERS = "admin:Adm1n-s3cret,reader:R3ad-only:readAnyDatabase"


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path):
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it (EC P-256)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(tmp_path, "req", "-x509", *ec, "-days", "2", "-subj", "/CN=mongo-sim pytest CA",
             "-keyout", "ca.key", "-out", "ca.crt",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl(tmp_path, "req", *ec, "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr")
    (tmp_path / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    _openssl(tmp_path, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt")
    return tmp_path


@pytest.fixture
def secured(start_sim, certificates):
    """(uri, ca) of a private simulator with TLS and USERS."""
    uri = start_sim("--tls-cert", str(certificates / "server.crt"),
                    "--tls-key", str(certificates / "server.key"), "--auth", USERS)
    return uri, str(certificates / "ca.crt")


def _client(secured, **kwargs):
    uri, ca = secured
    return MongoClient(uri, tls=True, tlsCAFile=ca, **{**CLIENT_GUARDS, **kwargs})


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_logs_in_over_tls(secured, mechanism):
    c = _client(secured, username="admin", password="Adm1n-s3cret", authMechanism=mechanism)
    try:
        c.shop.orders.insert_one({"mechanism": mechanism})
        assert c.shop.orders.count_documents({"mechanism": mechanism}) == 1
        status = c.admin.command("connectionStatus")
        assert status["authInfo"]["authenticatedUsers"] == [{"user": "admin", "db": "admin"}]
    finally:
        c.close()


def test_default_mechanism_negotiates_sha_256(secured):
    c = _client(secured, username="admin", password="Adm1n-s3cret")
    try:
        hello = c.admin.command("hello", saslSupportedMechs="admin.admin")
        assert hello["saslSupportedMechs"] == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
        c.shop.orders.find_one()
    finally:
        c.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_wrong_password_is_authentication_failed(secured, mechanism):
    c = _client(secured, username="admin", password="wrong", authMechanism=mechanism)
    try:
        with pytest.raises(OperationFailure) as e:
            c.shop.orders.find_one()
        assert e.value.code == 18
        assert e.value.details["codeName"] == "AuthenticationFailed"
        assert "Authentication failed." in str(e.value)
    finally:
        c.close()


def test_commands_before_login_are_unauthorized(secured):
    c = _client(secured)
    try:
        c.admin.command("ping")  # allowed before login
        with pytest.raises(OperationFailure) as e:
            c.shop.orders.find_one()
        assert e.value.code == 13
        assert e.value.details["errmsg"] == "Command find requires authentication"
    finally:
        c.close()


def test_read_only_user_is_refused_writes_and_may_watch(secured):
    admin = _client(secured, username="admin", password="Adm1n-s3cret")
    reader = _client(secured, username="reader", password="R3ad-only")
    try:
        with pytest.raises(OperationFailure) as e:
            reader.shop.orders.insert_one({"x": 1})
        assert e.value.code == 13
        assert e.value.details["errmsg"].startswith(
            'not authorized on shop to execute command { insert: "orders"')
        with reader.watch(max_await_time_ms=200) as stream:
            admin.shop.orders.insert_one({"_id": "seen"})
            event = None
            for _ in range(100):  # each try_next waits up to 200 ms
                event = stream.try_next()
                if event is not None:
                    break
            assert event is not None and event["documentKey"] == {"_id": "seen"}
    finally:
        admin.close()
        reader.close()


def test_plaintext_client_never_gets_through(secured):
    uri, _ = secured
    c = MongoClient(uri, username="admin", password="Adm1n-s3cret",
                    serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
    try:
        with pytest.raises(ServerSelectionTimeoutError):
            c.admin.command("ping")
    finally:
        c.close()
