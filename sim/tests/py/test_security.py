"""pymongo against a secured mongo-sim (`--tls-cert/--tls-key` and `--auth`): SCRAM-SHA-256 and
SCRAM-SHA-1 logins over TLS with a CA made here (the `openssl` CLI), a wrong password
(OperationFailure 18), commands before login (13), a read-only user refused a write and allowed
a change stream, and a plaintext client that never gets through. With `--tls-ca-file` and
`--x509-user`: MONGODB-X509 logins with the certificate's roles, a certificate from another CA
refused in the TLS handshake, and a certificate whose subject is no user refused with mongod's
reply (11 UserNotFound)."""

from __future__ import annotations

import subprocess

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from conftest import CLIENT_GUARDS

USERS = "admin:Adm1n-s3cret,reader:R3ad-only:readAnyDatabase"


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class _TestCa:
    """A CA in `directory` (files named after it, so several can share the directory) that signs
    server and client certificates (EC P-256: fast to make)."""

    def __init__(self, directory, name):
        self.dir, self.name = directory, name
        self.cert = directory / f"{name}.crt"
        _openssl(directory, "req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.crt",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _sign(self, stem, subject, extensions):
        stem = f"{self.name}-{stem}"
        _openssl(self.dir, "req", *_EC, "-subj", subject, "-keyout", f"{stem}.key",
                 "-out", f"{stem}.csr")
        (self.dir / f"{stem}.ext").write_text(extensions)
        _openssl(self.dir, "x509", "-req", "-in", f"{stem}.csr", "-CA", f"{self.name}.crt",
                 "-CAkey", f"{self.name}.key", "-CAserial", f"{self.name}.srl",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{stem}.ext",
                 "-out", f"{stem}.crt")
        return self.dir / f"{stem}.crt", self.dir / f"{stem}.key"

    def server(self):
        """(certificate, key) for localhost / 127.0.0.1."""
        return self._sign("server", "/CN=localhost",
                          "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                          "basicConstraints=critical,CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")

    def client(self, stem, subject):
        """A PEM holding a client certificate for `subject` (OpenSSL's /O=x/OU=y/CN=z form) and
        its key: what tlsCertificateKeyFile takes."""
        crt, key = self._sign(stem, subject,
                              "basicConstraints=critical,CA:FALSE\n"
                              "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
        pem = self.dir / f"{self.name}-{stem}.pem"
        pem.write_bytes(crt.read_bytes() + key.read_bytes())
        return str(pem)


@pytest.fixture
def certificates(tmp_path):
    """A CA (ca.crt) and a server certificate for localhost / 127.0.0.1 signed by it."""
    ca = _TestCa(tmp_path, "ca")
    crt, key = ca.server()
    crt.rename(tmp_path / "server.crt")
    key.rename(tmp_path / "server.key")
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


# --- MONGODB-X509 ---------------------------------------------------------------------------

X509_ADMIN = "CN=ops,OU=sync,O=Example"
X509_READER = "CN=tributary,OU=sync,O=Example"


@pytest.fixture
def x509(start_sim, tmp_path):
    """(uri, ca, ca object) of a private simulator checking client certificates against a CA
    made here, with X509_ADMIN (root) and X509_READER (readAnyDatabase)."""
    ca = _TestCa(tmp_path, "x509-ca")
    crt, key = ca.server()
    uri = start_sim("--tls-cert", str(crt), "--tls-key", str(key), "--tls-ca-file", str(ca.cert),
                    "--x509-user", X509_ADMIN, "--x509-user", f"{X509_READER}:readAnyDatabase")
    return uri, str(ca.cert), ca


def _x509_client(x509, pem, **kwargs):
    uri, ca, _ = x509
    return MongoClient(uri, tls=True, tlsCAFile=ca, tlsCertificateKeyFile=pem,
                       **{**CLIENT_GUARDS, **kwargs})


def test_x509_logs_in_as_the_certificate_subject_with_its_roles(x509):
    _, _, ca = x509
    admin = _x509_client(x509, ca.client("ops", "/O=Example/OU=sync/CN=ops"),
                         authMechanism="MONGODB-X509")
    reader = _x509_client(x509, ca.client("tributary", "/O=Example/OU=sync/CN=tributary"),
                          authMechanism="MONGODB-X509")
    try:
        admin.shop.orders.insert_one({"_id": "x509"})
        assert reader.shop.orders.find_one() == {"_id": "x509"}
        status = reader.admin.command("connectionStatus")
        assert status["authInfo"]["authenticatedUsers"] == [{"user": X509_READER, "db": "$external"}]
        assert status["authInfo"]["authenticatedUserRoles"] == [
            {"role": "readAnyDatabase", "db": "admin"}]
        with pytest.raises(OperationFailure) as e:
            reader.shop.orders.insert_one({"_id": "refused"})
        assert e.value.code == 13
    finally:
        admin.close()
        reader.close()


def test_x509_certificate_from_another_ca_fails_the_handshake(x509, tmp_path):
    other = _TestCa(tmp_path, "other-ca")
    # The subject of a declared user, signed by a CA the server does not trust.
    forged = other.client("tributary", "/O=Example/OU=sync/CN=tributary")
    c = _x509_client(x509, forged, authMechanism="MONGODB-X509", serverSelectionTimeoutMS=2000)
    try:
        with pytest.raises(ServerSelectionTimeoutError) as e:
            c.shop.orders.find_one()
        assert "alert" in str(e.value).lower() or "ssl" in str(e.value).lower(), str(e.value)
    finally:
        c.close()


def test_x509_subject_that_is_no_user_is_user_not_found(x509):
    _, _, ca = x509
    stranger = ca.client("stranger", "/O=Example/OU=sync/CN=stranger")
    c = _x509_client(x509, stranger, authMechanism="MONGODB-X509")
    try:
        with pytest.raises(OperationFailure) as e:
            c.shop.orders.find_one()
        # mongod 7.0 passes UserNotFound through (CmdAuthenticate rewrites every other
        # failure to 18 AuthenticationFailed).
        assert e.value.code == 11
        assert e.value.details["codeName"] == "UserNotFound"
        assert e.value.details["errmsg"] == (
            'Could not find user "CN=stranger,OU=sync,O=Example" for db "$external"')
    finally:
        c.close()
    # Claiming another user's name with this certificate: 18.
    c = _x509_client(x509, stranger, authMechanism="MONGODB-X509", username=X509_READER)
    try:
        with pytest.raises(OperationFailure) as e:
            c.shop.orders.find_one()
        assert e.value.code == 18
        assert "Authentication failed." in str(e.value)
    finally:
        c.close()
