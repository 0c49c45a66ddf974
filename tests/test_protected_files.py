"""Protected and linked attachments (issue 26 §4): ``protect`` sends an attachment as an AES-256
encrypted ZIP (opened here with 7-Zip, as a recipient would, and with pyzipper), its password a
fabric secret that is never in the message, a log or the report; ``files`` attaches existing
files, byte for byte, and fails loudly when one is missing or too large. Through the Python API
(pandas and Spark) and ``mailgem run``."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pyzipper
from conftest import PASSWORD, USER, fabric_for, parse_strict
from pydantic import SecretStr

from mailgem.fabric import EncryptedFileSecretStore, generate_key
from mailgem.gems.email import EmailGem
from mailgem.gems.email.content.attachments import Attachment, build_attachment
from mailgem.gems.email.content.protect import zip_encrypted
from mailgem.gems.email.errors import GemValidationError
from mailgem.gems.email.properties import AttachmentSpec, EmailProperties
from mailgem.gems.email.validate import validate
from mailgem.runner.cli import main

ROOT = Path(__file__).resolve().parents[1]
ZIP_PASSWORD = "Zip-Pa55-test-only-7c1d"
MARKER = "PLAINTEXT-MARKER-0451"  # a cell value that must not be readable in the encrypted ZIP
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
PROTECT = {"password": {"secret": "zip-password"}}
# The body's table would show the rows in clear (validate warns): off, as a protected report has it.
REPORT = {"connection": "reports", "to": "ops@example.com", "subject": "Payroll", "on_error": "continue",
          "table": {"enabled": False}}
# 7z (Debian 13's 7zip, p7zip-full) or 7zz (Debian 12's 7zip).
SEVEN_ZIP = shutil.which("7z") or shutil.which("7zz")
needs_7z = pytest.mark.skipif(SEVEN_ZIP is None, reason="7-Zip (Debian package 7zip) is not installed; .ci/run installs it")

FRAME = pd.DataFrame({"name": ["Ada", "Bo", MARKER], "region": ["North", "South", "North"], "salary": [5100, 4200, 3900]})


def _fabric(server):
    fabric = fabric_for(server)
    fabric.store().set("zip-password", SecretStr(ZIP_PASSWORD))
    return fabric


def _send(server, frame: pd.DataFrame, base_dir: Path | None = None, **props):
    gem = EmailGem(REPORT | props, _fabric(server), user=USER, name="payroll", base_dir=base_dir)
    report = gem.apply(frame)
    sent = int((report["status"] == "sent").sum())
    return report, server.wait_for_messages(sent) if sent else []


def _seven_zip(archive: Path, out: Path, password: str) -> subprocess.CompletedProcess[str]:
    assert SEVEN_ZIP is not None
    # A UTF-8 locale: 7-Zip reads a non-ASCII password from its arguments in the locale's encoding.
    return subprocess.run([SEVEN_ZIP, "x", f"-p{password}", f"-o{out}", "-y", str(archive)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"})


def _check_zip(data: bytes, inner: str, tmp_path: Path) -> bytes:
    """The file inside the encrypted ZIP ``data``: opened with pyzipper and, when installed, 7-Zip
    (which must refuse a wrong password); returns its bytes."""
    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        [info] = zf.infolist()
        assert info.filename == inner and info.flag_bits & 0x1  # encrypted
        zf.setpassword(ZIP_PASSWORD.encode())
        content = zf.read(inner)
    with pytest.raises(RuntimeError):  # the standard library cannot read WinZip AES without the password
        zipfile.ZipFile(io.BytesIO(data)).read(inner)
    if SEVEN_ZIP is not None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        archive = tmp_path / f"{inner}.zip"
        archive.write_bytes(data)
        listed = subprocess.run([SEVEN_ZIP, "l", "-slt", f"-p{ZIP_PASSWORD}", str(archive)], capture_output=True,
                                text=True, timeout=60)
        assert "Method = AES-256" in listed.stdout, listed.stdout
        done = _seven_zip(archive, tmp_path / "right", ZIP_PASSWORD)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "right" / inner).read_bytes() == content
        wrong = _seven_zip(archive, tmp_path / "wrong", "not-the-password")
        assert wrong.returncode != 0 and "Wrong password" in wrong.stdout + wrong.stderr
    return content


# -- protect: the API --------------------------------------------------------------------------

@needs_7z
def test_a_protected_csv_is_an_aes_zip_that_7zip_opens_with_the_password_only(starttls_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    spec = {"file_name": "payroll.csv", "protect": PROTECT}
    report, [received] = _send(starttls_server, FRAME, attachments=[spec])
    assert list(report["status"]) == ["sent"]
    [part] = list(parse_strict(received.data).iter_attachments())
    assert part.get_content_type() == "application/zip" and part.get_filename() == "payroll.csv.zip"
    data = part.get_content()
    expected = build_attachment(pa.Table.from_pandas(FRAME, preserve_index=False),
                                AttachmentSpec(file_name="payroll.csv"), "payroll.csv").data
    assert _check_zip(data, "payroll.csv", tmp_path) == expected
    assert MARKER.encode() not in data and MARKER.encode() not in received.data
    # The password is nowhere: not in the message, the logs or the report.
    assert ZIP_PASSWORD.encode() not in received.data
    assert ZIP_PASSWORD not in caplog.text and ZIP_PASSWORD not in report.to_csv()


@needs_7z
def test_a_protected_xlsx_opens_with_7zip_and_holds_the_workbook(starttls_server, tmp_path):
    spec = {"file_name": "payroll.xlsx", "format": "xlsx", "protect": PROTECT}
    _, [received] = _send(starttls_server, FRAME, attachments=[spec])
    [part] = list(parse_strict(received.data).iter_attachments())
    assert part.get_filename() == "payroll.xlsx.zip" and part.get_content_type() == "application/zip"
    workbook = _check_zip(part.get_content(), "payroll.xlsx", tmp_path)
    rows = list(openpyxl.load_workbook(io.BytesIO(workbook)).active.iter_rows(values_only=True))
    assert rows == [("name", "region", "salary"), ("Ada", "North", 5100), ("Bo", "South", 4200), (MARKER, "North", 3900)]
    assert ZIP_PASSWORD.encode() not in received.data


def test_validate_warns_that_the_body_table_shows_a_protected_attachments_rows():
    props = REPORT | {"attachments": [{"protect": PROTECT}], "table": {"enabled": True}}
    [found] = [d for d in validate(props) if d.path == "table.enabled"]
    assert found.severity == "warning" and "shows its rows in clear" in found.message


@needs_7z
def test_a_non_ascii_password_is_utf8_as_7zip_reads_it(tmp_path):
    password = "pässwörd-€"
    zipped = zip_encrypted(Attachment("d.csv", b"a,b\r\n1,2\r\n", "text", "csv"), SecretStr(password),
                           (2026, 12, 7, 19, 0, 0))
    assert zipped.file_name == "d.csv.zip" and repr(SecretStr(password)) == "SecretStr('**********')"
    (tmp_path / "d.csv.zip").write_bytes(zipped.data)
    done = _seven_zip(tmp_path / "d.csv.zip", tmp_path / "out", password)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "d.csv").read_bytes() == b"a,b\r\n1,2\r\n"


def test_a_protected_parquet_file_reads_back_from_the_zip():
    table = pa.Table.from_pandas(FRAME, preserve_index=False)
    spec = AttachmentSpec(file_name="d.parquet", format="parquet", protect=PROTECT)
    zipped = zip_encrypted(build_attachment(table, spec, "d.parquet"), SecretStr(ZIP_PASSWORD), (2026, 12, 7, 0, 0, 0))
    with pyzipper.AESZipFile(io.BytesIO(zipped.data)) as zf:
        zf.setpassword(ZIP_PASSWORD.encode())
        assert zf.getinfo("d.parquet").compress_type == pyzipper.ZIP_STORED  # compressed already: stored
        assert pq.read_table(io.BytesIO(zf.read("d.parquet"))).equals(table)


def test_compression_with_protect_is_refused_and_compress_leaves_a_protected_file_as_it_is(starttls_server):
    with pytest.raises(ValueError, match="a protected file is zipped already .*: remove compression"):
        EmailProperties.model_validate(REPORT | {"attachments": [{"compression": "gzip", "protect": PROTECT}]})
    # Over the limit: compress does not touch the protected ZIP, so the message fails, saying so.
    big = pd.DataFrame({"n": range(4000), "text": [os.urandom(8).hex() for _ in range(4000)]})
    report, _ = _send(starttls_server, big, attachments=[{"file_name": "d.csv", "protect": PROTECT}],
                      max_message_bytes=20_000, attachments_over_limit="compress")
    assert list(report["status"]) == ["failed"] and "over the limit of 20,000 bytes" in report["error"][0]


def test_split_sends_each_part_as_its_own_protected_zip(starttls_server, tmp_path):
    big = pd.DataFrame({"n": range(8000), "text": [os.urandom(8).hex() for _ in range(8000)]})
    report, received = _send(starttls_server, big, attachments=[{"file_name": "d.csv", "protect": PROTECT}],
                             max_message_bytes=60_000, attachments_over_limit="split")
    assert len(report) >= 2 and set(report["status"]) == {"sent"}
    rows = []
    for message in received:
        [part] = list(parse_strict(message.data).iter_attachments())
        name = part.get_filename()
        assert name.startswith("d-part") and name.endswith(".csv.zip")
        content = _check_zip(part.get_content(), name.removesuffix(".zip"), tmp_path / name)
        rows += list(csv.reader(io.StringIO(content.decode())))[1:]
    assert sorted(int(r[0]) for r in rows) == list(range(8000))


def test_a_missing_zip_password_fails_the_run_before_anything_is_read(starttls_server):
    gem = EmailGem(REPORT | {"attachments": [{"protect": {"password": {"secret": "nope"}}}]}, fabric_for(starttls_server),
                   user=USER)
    with pytest.raises(Exception, match="secret 'nope' not found"):
        gem.apply(FRAME)
    assert starttls_server.messages == []


def test_a_preview_reads_no_secret_and_says_its_zip_has_a_throwaway_password(starttls_server):
    fabric = fabric_for(starttls_server)  # no zip-password in its store: a preview must not need it
    gem = EmailGem(REPORT | {"attachments": [{"file_name": "d.csv", "protect": PROTECT}]}, fabric, user=USER)
    [built] = gem.preview(FRAME)
    assert built.error is None
    [part] = list(built.message.iter_attachments())
    assert part.get_filename() == "d.csv.zip"
    assert "preview-only password" in built.message.notes and "'zip-password'" in built.message.notes


def test_the_password_and_the_files_folder_travel_to_spark_executors(spark, starttls_server, tmp_path, capfd):
    (tmp_path / "reports").mkdir()
    for region in ("North", "South"):
        (tmp_path / "reports" / f"{region}.pdf").write_bytes(PDF + region.encode())
    frame = spark.createDataFrame(FRAME)
    gem = EmailGem(REPORT | {"mode": "per_group", "group_by": ["region"], "subject": "{{ group.region }}",
                             "attachments": [{"file_name": "{{ group.region }}.csv", "protect": PROTECT}],
                             "files": [{"path": "reports/{{ group.region }}.pdf"}]},
                   _fabric(starttls_server), user=USER, base_dir=tmp_path)
    report = gem.apply(spark, frame).toPandas()
    assert sorted(report["status"]) == ["sent", "sent"]
    names = {}
    for message in starttls_server.wait_for_messages(2):
        msg = parse_strict(message.data)
        part, pdf = msg.iter_attachments()
        names[part.get_filename()] = _check_zip(part.get_content(), part.get_filename()[:-4], tmp_path / part.get_filename())
        assert pdf.get_content() == PDF + msg["Subject"].encode()
        assert ZIP_PASSWORD.encode() not in message.data
    assert sorted(names) == ["North.csv.zip", "South.csv.zip"]
    assert names["South.csv.zip"].decode().splitlines()[1:] == ['"Bo","South",4200']
    captured = capfd.readouterr()
    assert ZIP_PASSWORD not in captured.out + captured.err + report.to_csv()


# -- files: the API ----------------------------------------------------------------------------

def test_a_static_file_is_attached_byte_for_byte_with_its_content_type(starttls_server, tmp_path):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "summary.pdf").write_bytes(PDF)
    report, [received] = _send(starttls_server, FRAME, base_dir=tmp_path,
                               files=[{"path": "exports/summary.pdf"}, {"path": str(tmp_path / "exports" / "summary.pdf"),
                                                                        "file_name": "Résumé {{ run_date }}.pdf"}])
    assert list(report["status"]) == ["sent"]
    first, second = parse_strict(received.data).iter_attachments()
    assert first.get_content_type() == "application/pdf" and first.get_filename() == "summary.pdf"
    assert first.get_content() == PDF and second.get_content() == PDF
    assert second.get_filename().startswith("Résumé 20") and second.get_filename().endswith(".pdf")


@needs_7z
def test_a_file_can_be_protected_too(starttls_server, tmp_path):
    (tmp_path / "summary.pdf").write_bytes(PDF)
    _, [received] = _send(starttls_server, FRAME, base_dir=tmp_path, files=[{"path": "summary.pdf", "protect": PROTECT}])
    [part] = list(parse_strict(received.data).iter_attachments())
    assert part.get_filename() == "summary.pdf.zip" and part.get_content_type() == "application/zip"
    assert _check_zip(part.get_content(), "summary.pdf", tmp_path) == PDF


def test_templated_paths_per_group_and_a_missing_file_fails_only_its_message(starttls_server, tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "North.pdf").write_bytes(PDF + b"north")
    frame = pd.concat([FRAME, pd.DataFrame({"name": ["Cy"], "region": ["East"], "salary": [1]})], ignore_index=True)
    (reports / "South.pdf").write_bytes(PDF + b"south")
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    report, received = _send(starttls_server, frame, base_dir=tmp_path, mode="per_group", group_by=["region"],
                             subject="{{ group.region }}", files=[{"path": "reports/{{ group.region }}.pdf",
                                                                   "file_name": "{{ group.region }} payroll.pdf"}])
    rows = report.set_index("message_key")
    assert rows["status"].to_dict() == {'group:["East"]': "failed", 'group:["North"]': "sent", 'group:["South"]': "sent"}
    assert rows.loc['group:["East"]', "error"] == (f"files[0].path: reports/East.pdf resolves to {reports / 'East.pdf'}, "
                                                "which does not exist")
    got = {}
    for message in received:
        msg = parse_strict(message.data)
        [part] = list(msg.iter_attachments())
        got[msg["Subject"]] = (part.get_filename(), part.get_content())
    assert got == {"North": ("North payroll.pdf", PDF + b"north"), "South": ("South payroll.pdf", PDF + b"south")}
    assert sorted(reads) == ["North.pdf", "South.pdf"]


def test_a_value_from_the_data_cannot_leave_the_templates_folder(starttls_server, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "secret.pdf").write_bytes(PDF)
    frame = pd.DataFrame({"region": ["../secret"]})
    report, _ = _send(starttls_server, frame, base_dir=tmp_path, mode="per_group", group_by=["region"],
                      files=[{"path": "reports/{{ group.region }}.pdf"}])
    assert list(report["status"]) == ["failed"] and "a value from the data may not leave that folder" in report["error"][0]


def test_each_file_is_read_once_per_run(starttls_server, tmp_path, monkeypatch):
    (tmp_path / "terms.pdf").write_bytes(PDF)
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    report, received = _send(starttls_server, FRAME, base_dir=tmp_path, mode="per_row",
                             subject="{{ row.name }}", files=[{"path": "terms.pdf"}])
    assert list(report["status"]) == ["sent"] * 3 and len(received) == 3
    assert reads == ["terms.pdf"]


def test_a_missing_static_file_is_an_error_before_anything_is_read(starttls_server, tmp_path):
    gem = EmailGem(REPORT | {"files": [{"path": "exports/nope.pdf"}]}, fabric_for(starttls_server), user=USER,
                   base_dir=tmp_path)
    with pytest.raises(GemValidationError, match=r"files\[0\].path: exports/nope.pdf resolves to .*nope.pdf, which does "
                                                 "not exist"):
        gem.apply(FRAME)
    assert starttls_server.messages == []


@pytest.mark.parametrize("policy", ["error", "split"])
def test_a_file_over_the_size_limit_fails_its_message_with_its_size(starttls_server, tmp_path, monkeypatch, policy):
    (tmp_path / "big.pdf").write_bytes(PDF + os.urandom(30_000))
    (tmp_path / "small.pdf").write_bytes(PDF)
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("a file over the limit must not be read")
                        if self.name == "big.pdf" else real(self))
    frame = pd.DataFrame({"doc": ["big", "small"], "n": [1, 2]})
    report, received = _send(starttls_server, frame, base_dir=tmp_path, mode="per_row", subject="{{ row.doc }}",
                             files=[{"path": "{{ row.doc }}.pdf"}], max_message_bytes=20_000,
                             attachments_over_limit=policy)
    rows = report.set_index("message_key")["status"].to_dict()
    assert sorted(rows.values()) == ["failed", "sent"] and len(received) == 1
    error = report.loc[report["status"] == "failed", "error"].iloc[0]
    size = len(PDF) + 30_000
    assert f"files[0]: the file {tmp_path / 'big.pdf'} is {size:,} bytes" in error
    assert "over the message limit of 20,000 bytes" in error
    assert ("cannot be split or compressed" in error) == (policy == "split")


# -- mailgem run ---------------------------------------------------------------------------------

JOB = """
name: payroll
source: {{path: staff.csv}}
email:
  connection: team-smtp
  to: boss@example.com
  mode: per_group
  group_by: [region]
  subject: "{{{{ group.region }}}}"
  attachments: [{{file_name: "{{{{ group.region }}}}.xlsx", format: xlsx, protect: {{password: {{secret: {secret}}}}}}}]
  files: [{{path: "{files}"}}, {{path: exports/terms.pdf, file_name: Terms.pdf}}]
"""


def _job_dir(tmp_path: Path, server, secret: str = "zip-password", files: str = "reports/{{ group.region }}.pdf") -> Path:
    jobs = tmp_path / "jobs"
    for folder in ("reports", "exports"):
        (jobs / folder).mkdir(parents=True)
    (jobs / "staff.csv").write_text("name,region,salary\nAda,North,5100\nBo,South,4200\n")
    (jobs / "reports" / "North.pdf").write_bytes(PDF + b"N")
    (jobs / "reports" / "South.pdf").write_bytes(PDF + b"S")
    (jobs / "exports" / "terms.pdf").write_bytes(PDF)
    (jobs / "job.yaml").write_text(JOB.format(secret=secret, files=files))
    key = tmp_path / "key"
    key.write_text(generate_key())
    store = EncryptedFileSecretStore(tmp_path / "secrets.json", key_file=key)
    store.set("pw", SecretStr(PASSWORD))
    store.set("zip-password", SecretStr(ZIP_PASSWORD))
    (tmp_path / "fabric.yaml").write_text(f"""
name: hr
teams: [{{name: hr, members: [{USER}]}}]
secrets: {{type: encrypted_file, path: secrets.json, key_file: key}}
connections:
  - {{name: team-smtp, host: 127.0.0.1, port: {server.port}, ca_bundle: "{server.ca_pem}",
      username: reports@example.com, password: {{secret: pw}}}}
""")
    return jobs


@needs_7z
def test_mailgem_run_sends_protected_workbooks_and_linked_files(starttls_server, tmp_path):
    jobs = _job_dir(tmp_path, starttls_server)
    # Started from another folder: the job's relative paths start at the job file's folder.
    done = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", "run", str(jobs / "job.yaml"), "--fabric",
                           str(tmp_path / "fabric.yaml"), "--user", USER, "--report-out", str(tmp_path / "report.csv")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    got = {}
    for message in starttls_server.wait_for_messages(2):
        assert ZIP_PASSWORD.encode() not in message.data
        msg = parse_strict(message.data)
        workbook, region_pdf, terms = msg.iter_attachments()
        region = msg["Subject"]
        assert workbook.get_filename() == f"{region}.xlsx.zip" and workbook.get_content_type() == "application/zip"
        content = _check_zip(workbook.get_content(), f"{region}.xlsx", tmp_path / region)
        got[region] = list(openpyxl.load_workbook(io.BytesIO(content)).active.iter_rows(values_only=True))[1:]
        assert region_pdf.get_filename() == f"{region}.pdf" and region_pdf.get_content() == PDF + region[0].encode()
        assert terms.get_filename() == "Terms.pdf" and terms.get_content_type() == "application/pdf"
        assert terms.get_content() == PDF
    assert got == {"North": [("Ada", "North", 5100)], "South": [("Bo", "South", 4200)]}
    assert ZIP_PASSWORD not in done.stdout + done.stderr + (tmp_path / "report.csv").read_text()


@pytest.fixture
def no_spark(monkeypatch):
    """Spark must not start: the checks before it stop the run."""
    monkeypatch.setattr("mailgem.runner.spark.local_spark", lambda *a, **k: pytest.fail("Spark started"))


def test_mailgem_run_names_a_missing_secret_and_a_missing_file_before_spark(starttls_server, tmp_path, capsys, no_spark):
    jobs = _job_dir(tmp_path, starttls_server, secret="no-such-secret", files="exports/missing.pdf")
    code = main(["run", str(jobs / "job.yaml"), "--fabric", str(tmp_path / "fabric.yaml"), "--user", USER])
    err = capsys.readouterr().err
    assert code == 2
    assert (f"{jobs / 'job.yaml'}: email.attachments[0].protect.password.secret: fabric 'hr' (encrypted_file secret "
            f"store): secret 'no-such-secret' not found in {tmp_path / 'secrets.json'}") in err
    assert (f"email.files[0].path: exports/missing.pdf resolves to {jobs / 'exports' / 'missing.pdf'}, which does not "
            f"exist (a relative path starts at the job file's folder, {jobs})") in err
    assert starttls_server.messages == []


def test_mailgem_run_local_says_the_zip_password_needs_the_fabric(tmp_path, capsys, no_spark):
    jobs = _job_dir(tmp_path, SimpleNamespace(port=1, ca_pem="unused"))  # --local: the fabric file is not read
    code = main(["run", str(jobs / "job.yaml"), "--local", "--outbox", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "email.attachments[0].protect.password.secret: the embedded local server's fabric holds " \
                         "no secrets" in err and "--fabric" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
