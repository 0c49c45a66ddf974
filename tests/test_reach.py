"""Reach (issue 12): internal relays' special-use domains, delivery status notifications (RFC
3461), DKIM signatures; each a connection property, shown by `mailgem connection test`, tested
against real servers."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import PASSWORD, PER_ROW, USER, connection_for, fabric_for, parse

from mailgem.connections import ConfigError
from mailgem.connections.sync import run_sync
from mailgem.gems.email import EmailGem, GemValidationError


def _frame(*addresses: str) -> pd.DataFrame:
    return pd.DataFrame({"n": range(len(addresses)), "to": list(addresses)})


# -- internal domains --------------------------------------------------------------------------

INTERNAL = ("ops@relay", "ana@files.corp.home.arpa", "x@printer.local", "bo@example.com")


def test_special_use_domains_are_refused_unless_the_connection_allows_them(starttls_server):
    report = EmailGem(PER_ROW, fabric_for(starttls_server), user=USER).apply(None, _frame(*INTERNAL))
    assert list(report["status"]) == ["failed", "failed", "failed", "sent"]
    assert "allowed_special_domains, e.g. [relay]" in report.iloc[0].error
    assert "special-use" in report.iloc[1].error and "allowed_special_domains" in report.iloc[1].error

    fab = fabric_for(starttls_server, allowed_special_domains=["relay", ".Home.Arpa"])
    report = EmailGem(PER_ROW, fab, user=USER).apply(None, _frame(*INTERNAL))
    assert list(report["status"]) == ["sent", "sent", "failed", "sent"]  # .local was not listed
    assert "special-use" in report.iloc[2].error
    received = sorted(r for m in starttls_server.wait_for_messages(4) for r in m.rcpt_tos)
    assert received == ["ana@files.corp.home.arpa", "bo@example.com", "bo@example.com", "ops@relay"]


def test_static_recipients_and_the_sender_may_use_allowed_special_domains(starttls_server):
    props = {"connection": "reports", "to": "Ops <ops@relay>", "reply_to": "desk@it.local", "subject": "s"}
    with pytest.raises(GemValidationError, match=r"to\[0\]: 'ops@relay' is not a valid email address"):
        EmailGem(props, fabric_for(starttls_server), user=USER).apply(None, _frame("a@example.com"))
    fab = fabric_for(starttls_server, allowed_special_domains=["relay", "local"])
    EmailGem(props, fab, user=USER).apply(None, _frame("a@example.com"))
    [message] = starttls_server.wait_for_messages(1)
    assert list(message.rcpt_tos) == ["ops@relay"] and parse(message.data)["Reply-To"] == "desk@it.local"
    with pytest.raises(ValueError, match="sender_address 'reports@mailhost' is not a valid email address"):
        connection_for(starttls_server, sender_address="reports@mailhost")
    conn = connection_for(starttls_server, sender_address="reports@mailhost", allowed_special_domains=["mailhost"])
    assert conn.sender == "reports@mailhost"


def test_allowed_special_domains_must_be_domain_names(starttls_server):
    with pytest.raises(ValueError, match="'corp internal' is not a domain name"):
        connection_for(starttls_server, allowed_special_domains=["corp internal"])
    with pytest.raises(ValueError, match="'@relay' is not a domain name"):
        connection_for(starttls_server, allowed_special_domains=["@relay"])


def test_connection_test_shows_the_options(starttls_server):
    fab = fabric_for(starttls_server, allowed_special_domains=["internal"], dsn={"notify": ["failure"]})
    lines = run_sync(fab.transport("reports", USER).check()).lines()
    assert "option      allowed_special_domains: internal (addresses there pass although special-use or " \
           "single-label)" in lines
    assert "option      dsn: notify failure, ret headers (RFC 3461; only where the server advertises DSN)" in lines


# -- delivery status notifications (RFC 3461) ---------------------------------------------------

@pytest.fixture(params=[True, False], ids=["pipelined", "unpipelined"])
def dsn_server(request):
    from fault_server import FaultServer

    with FaultServer(security="starttls", users={"reports@example.com": PASSWORD}, dsn=True,
                         pipelining=request.param) as server:
        yield server


def test_dsn_parameters_reach_the_server_and_the_envid_names_the_report_row(dsn_server, tmp_path):
    from mailgem.connections.dsn import envelope_id

    fab = fabric_for(dsn_server, dsn={"notify": ["failure", "delay"], "ret": "full"})
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite"), "run_key": "2024-05-01"}}
    report = EmailGem(props, fab, user=USER, name="nightly").apply(None, _frame("a@example.com", "b+x@example.com"))
    assert list(report["status"]) == ["sent", "sent"]
    by_envid = {}
    for received in dsn_server.wait_for_messages(2):
        options = dict(o.split("=", 1) for o in received.mail_options if "=" in o)
        assert options["RET"] == "FULL" and options["ENVID"].startswith("mg-")
        [(rcpt, params)] = received.rcpt_options
        assert params == ("NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;{rcpt.replace('+', '+2B')}")
        by_envid[options["ENVID"]] = rcpt
    for row in report.itertuples():
        assert row.envelope_id == envelope_id("nightly", "2024-05-01", row.message_key)  # stable across re-runs
        assert by_envid[row.envelope_id] == row.recipients  # a bounce's ENVID finds its report row


def test_dsn_never_and_headers(dsn_server):
    fab = fabric_for(dsn_server, dsn={"notify": "never"})
    EmailGem(PER_ROW, fab, user=USER).apply(None, _frame("a@example.com"))
    [received] = dsn_server.wait_for_messages(1)
    assert "RET=HDRS" in received.mail_options and received.rcpt_options[0][1][0] == "NOTIFY=NEVER"


def test_dsn_is_left_out_with_a_warning_where_the_server_does_not_offer_it(starttls_server, caplog):
    fab = fabric_for(starttls_server, dsn={"notify": ["failure"]})
    report = EmailGem(PER_ROW, fab, user=USER).apply(None, _frame("a@example.com", "b@example.com"))
    assert list(report["status"]) == ["sent", "sent"]
    assert all(not any(o.startswith(("RET", "ENVID")) for o in m.mail_options)
               for m in starttls_server.wait_for_messages(2))
    assert caplog.text.count("does not advertise DSN (RFC 3461)") == 1  # once, not per message


def test_dsn_options_are_checked():
    from mailgem.connections.dsn import DsnOptions

    with pytest.raises(ValueError, match="never cannot be combined"):
        DsnOptions(notify=["never", "failure"])
    with pytest.raises(ValueError):
        DsnOptions(ret="body")


# -- DKIM (RFC 6376) --------------------------------------------------------------------------

def _key(kind: str) -> tuple[str, str]:
    """A fresh private key (PEM, PKCS#8) and its DNS TXT record (``v=DKIM1; k=...; p=...``)."""
    import base64

    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    pem = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode()
    return pem, f"v=DKIM1; k={'rsa' if kind == 'rsa' else 'ed25519'}; p={base64.b64encode(public).decode()}"


def _signing_fabric(server, pem: str, **dkim):
    from pydantic import SecretStr

    from mailgem.fabric import MemorySecretStore

    fab = fabric_for(server, dkim={"domain": "example.com", "selector": "mg2026",
                                   "private_key": {"secret": "dkim-key"}} | dkim)
    return fab.with_store(MemorySecretStore({"smtp-password": SecretStr(PASSWORD), "dkim-key": SecretStr(pem)}))


def _verify(data: bytes, record: str) -> bool:
    import dkim

    def dns(name: bytes, timeout: int = 5) -> bytes:  # the DNS lookup, answered locally
        assert name == b"mg2026._domainkey.example.com."
        return record.encode()

    return dkim.verify(data, dnsfunc=dns)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_every_message_is_dkim_signed_and_verifies(starttls_server, kind):
    pem, record = _key(kind)
    props = PER_ROW | {"subject": "Rapport {{ row.n }}: délais été ✈", "text_body": "Bonjour {{ row.n }}, ça va ?",
                       "attachments": [{"file_name": "r{{ row.n }}.csv"}, {"file_name": "r{{ row.n }}.csv",
                                                                          "compression": "gzip"}]}
    frame = _frame("a@example.com", "b@example.com", "c@example.com")
    report = EmailGem(props, _signing_fabric(starttls_server, pem), user=USER).apply(None, frame)
    assert list(report["status"]) == ["sent"] * 3
    for received in starttls_server.wait_for_messages(3):
        assert received.data.startswith(b"DKIM-Signature: ")
        signature = parse(received.data)["DKIM-Signature"]
        assert f"a={kind}-sha256" in signature.replace(" ", "") and "c=relaxed/relaxed" in signature.replace(" ", "")
        assert "d=example.com" in signature and "s=mg2026" in signature
        assert _verify(received.data, record)
        # A changed body or subject no longer verifies (the check can fail).
        assert not _verify(received.data.replace(b"Bonjour", b"Bonsoir", 1) if b"Bonjour" in received.data
                           else received.data[:-40] + b"x" + received.data[-39:], record)


def test_dkim_configuration_mistakes_are_reported_before_sending(starttls_server):
    pem, _ = _key("ed25519")
    with pytest.raises(ValueError, match="not the sender's domain"):
        connection_for(starttls_server, dkim={"domain": "other.org", "selector": "s", "private_key": {"secret": "k"}})
    with pytest.raises(ValueError, match="must be a secret reference") as info:
        connection_for(starttls_server, dkim={"domain": "example.com", "selector": "s", "private_key": pem})
    # Named as the key it is, not as a password, and never echoed.
    assert "private_key" in str(info.value) and "password" not in str(info.value) and pem not in str(info.value)
    bad = _signing_fabric(starttls_server, "not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key") as info:
        EmailGem(PER_ROW, bad, user=USER).apply(None, _frame("a@example.com"))
    assert "not a key" not in str(info.value)
    assert starttls_server.messages == [] and starttls_server.sessions_opened == 0
    transport = _signing_fabric(starttls_server, pem).transport("reports", USER)
    assert pem.splitlines()[1] not in repr(transport) + repr(transport.identity._signer)
    assert "option      dkim: d=example.com s=mg2026, key from secret 'dkim-key', relaxed/relaxed" in \
        "\n".join(run_sync(transport.check()).lines())


def test_a_signed_message_survives_the_trip_to_a_spark_executor(spark, starttls_server):
    pem, record = _key("ed25519")
    frame = spark.createDataFrame(_frame("a@example.com", "b@example.com", "c@example.com", "d@example.com"))
    report = EmailGem(PER_ROW, _signing_fabric(starttls_server, pem), user=USER).apply(spark, frame.repartition(2))
    assert sorted(report.toPandas()["status"]) == ["sent"] * 4
    assert all(_verify(m.data, record) for m in starttls_server.wait_for_messages(4))


# -- proxies ------------------------------------------------------------------------------------

class _Proxy:
    """A real proxy server process (pproxy) on 127.0.0.1; ``log()`` is what it printed."""

    def __init__(self, tmp_path, listen: str) -> None:
        import socket
        import subprocess
        import sys
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._out = tmp_path / f"pproxy-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "pproxy", "-l",
                                      listen.format(port=self.port), "-v"],
                                     stdout=self._out.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # bounded: until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"pproxy did not start: {self.log()}")

    def log(self) -> str:
        return self._out.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _proxied_fabric(server, proxy, proxy_password: str | None = None):
    from pydantic import SecretStr

    from mailgem.fabric import MemorySecretStore

    fab = fabric_for(server, proxy=proxy)
    secrets = {"smtp-password": SecretStr(PASSWORD)}
    if proxy_password is not None:
        secrets["proxy-password"] = SecretStr(proxy_password)
    return fab.with_store(MemorySecretStore(secrets))


@pytest.mark.parametrize("kind", ["socks5", "http"])
@pytest.mark.parametrize("security", ["starttls", "implicit_tls"])
def test_messages_go_through_a_real_proxy_with_tls_end_to_end(tmp_path, kind, security):
    from fault_server import FaultServer

    proxy = _Proxy(tmp_path, f"{kind}://127.0.0.1:{{port}}#relayer:Pr0xy-pw-test")
    try:
        with FaultServer(security=security, users={"reports@example.com": PASSWORD}) as server:
            fab = _proxied_fabric(server, {"url": f"{kind}://relayer@127.0.0.1:{proxy.port}",
                                           "password": {"secret": "proxy-password"}}, "Pr0xy-pw-test")
            report = EmailGem(PER_ROW, fab, user=USER).apply(None, _frame("a@example.com", "b@example.com"))
            assert list(report["status"]) == ["sent", "sent"]
            assert all(m.tls and m.login == "reports@example.com" for m in server.wait_for_messages(2))
            assert f"-> 127.0.0.1:{server.port}" in proxy.log()  # the tunnel carried them
            lines = run_sync(fab.transport("reports", USER).check()).lines()
            assert f"option      proxy: {kind}://127.0.0.1:{proxy.port} as relayer, password from secret " \
                   "'proxy-password'" in lines
            assert any(line.startswith("tls         TLSv1.") for line in lines)
    finally:
        proxy.stop()


@pytest.mark.parametrize("kind", ["socks5", "http"])
def test_a_proxy_that_is_down_or_refuses_is_named_in_the_error(tmp_path, starttls_server, kind):
    from mailgem.connections import SmtpConnectError

    proxy = _Proxy(tmp_path, f"{kind}://127.0.0.1:{{port}}#relayer:right-pw")
    try:
        fab = _proxied_fabric(starttls_server, {"url": f"{kind}://relayer@127.0.0.1:{proxy.port}",
                                                "password": {"secret": "proxy-password"}}, "wr0ng-proxy-pw")
        with pytest.raises(SmtpConnectError) as info:
            run_sync(_open(fab))
        assert f"the proxy {kind}://127.0.0.1:{proxy.port} refused the tunnel" in str(info.value)
        assert "wr0ng-proxy-pw" not in str(info.value) and "proxy.password" in info.value.hint
    finally:
        proxy.stop()
    down = _proxied_fabric(starttls_server, f"{kind}://127.0.0.1:{proxy.port}")  # nothing listens there now
    with pytest.raises(SmtpConnectError, match=f"cannot reach the proxy {kind}://127.0.0.1:{proxy.port}"):
        run_sync(_open(down))
    assert starttls_server.sessions_opened == 0


async def _open(fab):
    async with fab.transport("reports", USER).connect():
        pass


def test_proxy_urls_are_checked(starttls_server):
    with pytest.raises(ValueError, match="contains a password"):
        connection_for(starttls_server, proxy="socks5://u:hunter2@127.0.0.1:1080")
    with pytest.raises(ValueError, match="must start with socks5:// or http://"):
        connection_for(starttls_server, proxy="ftp://127.0.0.1:21")
    with pytest.raises(ValueError, match="needs a host and a port"):
        connection_for(starttls_server, proxy="socks5://127.0.0.1")
