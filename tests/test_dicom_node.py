"""`s3f-edge listen`, the DICOM node, driven over the network as a scanner or PACS would: rows identical to `infer`
on the same files, an SR per image, AE titles off the allow-list rejected, bad datasets refused with the right
status while the node keeps serving, TLS, a clean stop on SIGTERM, and a SIGKILL at a random moment losing no
acknowledged image. (The round trip through a real PACS is in test_dicom_node_pacs.py.)"""
import os
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from dicom_node import LOOPBACK, NodeProcess, echo, make_study, send
from orthanc import ORTHANC_ENV, free_port, wait_for

from s3f_edge.dicom.sr import read_sr_finding
from s3f_edge.results import read_results
from s3f_edge.runtime.formats import load_predictor
from s3f_edge.runtime.local import infer_folder
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

pytest.importorskip("pynetdicom", reason="the dicom extra (make installs it)")
pytest.importorskip("highdicom", reason="the dicom extra (make installs it)")

MODEL = DEFAULT_MODEL_DIR / "model.onnx"
STUDY = "1.2.826.0.1.3680043.10.1234.1"


def test_the_node_answers_each_image_as_infer_does_and_reports_it(tmp_path):
    images = make_study(tmp_path / "study", 20, STUDY)
    with NodeProcess(tmp_path / "node", free_port(), "--batch-size", "8") as node:
        assert echo(node.port) == 0
        assert send(node.port, images) == [0] * 20
        wait_for(lambda: len(node.reports()) == 20, 60, what="20 SRs")
        assert node.stop() == 0, node.log
    results = sorted((tmp_path / "node" / "results").glob("*.csv"))
    assert len(results) == 1 and not list((tmp_path / "node" / "results").glob(".*"))  # no journal left
    day = tmp_path / "node" / "incoming" / results[0].stem
    # the same files through infer: the same bytes (rows, probabilities, fingerprints, model)
    infer_folder(day, load_predictor(MODEL), tmp_path / "infer.csv", recursive=True, progress=False)
    assert results[0].read_bytes() == (tmp_path / "infer.csv").read_bytes()
    rows = {Path(row["path"]).stem: row for row in read_results(results[0])}
    assert len(rows) == 20 and {row["status"] for row in rows.values()} <= {"ok", "refused"}
    found = {}
    for report in node.reports():
        finding = read_sr_finding(report)
        found[finding["source_sop_instance_uid"]] = finding
    assert set(found) == set(rows)
    for uid, row in rows.items():
        assert found[uid]["finding"] == (row["predicted_class"] if row["status"] == "ok" else "not assessed")
    line = [text for text in node.log.splitlines() if f"study {STUDY}:" in text]
    assert len(line) == 1 and "20 received from TESTSCU" in line[0] and "classified" in line[0], node.log
    assert "stopped" in node.log.splitlines()[-1]


def test_a_calling_ae_title_off_the_allow_list_is_rejected(tmp_path):
    images = make_study(tmp_path / "study", 1, STUDY)
    with NodeProcess(tmp_path / "node", free_port()) as node:
        assert echo(node.port, calling_ae="INTRUDER") == -1
        assert send(node.port, images, calling_ae="INTRUDER") == [-1]
        assert echo(node.port) == 0
        assert "association from INTRUDER" in node.log and "rejected" in node.log
    assert not list((tmp_path / "node" / "incoming").rglob("*.dcm"))


def _raw_garbage(port: int) -> None:
    """A stream that is no DICOM: an association request PDU whose body is noise."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as stream:
        stream.sendall(b"\x01\x00\x00\x00\x00\x40" + bytes(range(64)))
        stream.settimeout(10)
        try:
            while stream.recv(4096):
                pass
        except OSError:
            pass


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the hostile UID, made on purpose
def test_bad_datasets_get_a_failure_status_and_the_node_serves_the_next(tmp_path):
    import numpy as np
    import pydicom

    good = make_study(tmp_path / "study", 3, STUDY)
    no_pixels = pydicom.dcmread(good[0])
    del no_pixels.PixelData
    no_study = pydicom.dcmread(good[1])
    del no_study.StudyInstanceUID
    hostile = pydicom.dcmread(good[2])
    hostile.StudyInstanceUID = "1.2.3/../../../tmp/evil"
    big = pydicom.dcmread(good[0])
    big.Rows = big.Columns = 1024
    big.PixelData = np.zeros((1024, 1024), np.uint16).tobytes()  # 2 MiB, over the 1 MiB limit
    with NodeProcess(tmp_path / "node", free_port(), "--max-dataset-mb", "1", "--max-pdu-kb", "16") as node:
        assert send(node.port, [no_pixels, good[0], no_study, hostile, big, good[1]]) == \
            [0xA900, 0, 0xA900, 0xA900, 0xA700, 0]
        _raw_garbage(node.port)
        assert send(node.port, [good[2]], whole_pdus=True) == [-1]  # a 130 KB PDU where 16 KB were offered
        assert send(node.port, [good[2]]) == [0]
        assert echo(node.port) == 0
        wait_for(lambda: len(node.reports()) == 3, 60, what="3 SRs")
        assert node.process.poll() is None
    log = node.log
    assert "no pixel data" in log and "no valid StudyInstanceUID" in log and "over the limit" in log, log
    assert "is over the 16384 the node offered" in log, log
    spooled = list((tmp_path / "node" / "incoming").rglob("*.dcm"))  # the three good images, and nothing else
    assert sorted(p.name for p in spooled) == sorted(f"{STUDY}.1.{i}.dcm" for i in (1, 2, 3))
    assert {p.parent.name for p in spooled} == {STUDY}
    assert not list((tmp_path / "node" / ".partial").iterdir())
    assert not (Path("/tmp") / "evil").exists()


def test_sigterm_answers_the_images_in_hand_and_writes_the_results(tmp_path):
    images = make_study(tmp_path / "study", 10, STUDY)
    node = NodeProcess(tmp_path / "node", free_port(), "--batch-size", "1000", "--max-wait", "600").start()
    try:
        assert send(node.port, images) == [0] * 10
        assert node.stop() == 0, node.log
    finally:
        node.kill()
    results = list((tmp_path / "node" / "results").glob("*.csv"))
    assert len(results) == 1 and len(read_results(results[0])) == 10
    assert not list((tmp_path / "node" / "results").glob(".*"))  # no journal left
    assert len(node.reports()) == 10


def test_sigkill_at_any_moment_loses_no_acknowledged_image(tmp_path):
    images = make_study(tmp_path / "study", 60, STUDY)
    node = NodeProcess(tmp_path / "node", free_port(), "--batch-size", "4", "--max-wait", "0.05").start()
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.extend(send(node.port, images, timeout=10,
                                                                              pause=0.05)))
    try:
        sender.start()
        wait_for(lambda: len(node.rows()) >= 8, 60, interval=0.02, what="the first rows")
        node.kill()  # SIGKILL while images arrive and are classified
        sender.join(60)
        acknowledged = {f"{STUDY}.1.{i + 1}" for i, status in enumerate(statuses) if status == 0}  # SOP UIDs
        assert 8 <= len(acknowledged) < 60, statuses
        node.start()
        wait_for(lambda: acknowledged <= {Path(row["path"]).stem for row in node.rows()}, 60,
                 what="a row for every acknowledged image")
        wait_for(lambda: len(node.reports()) >= len(acknowledged), 60, what="their SRs")
        assert node.stop() == 0, node.log
    finally:
        node.kill()
    rows = read_results(next((tmp_path / "node" / "results").glob("*.csv")))
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) and acknowledged <= {Path(p).stem for p in paths}
    sources = [read_sr_finding(report)["source_sop_instance_uid"] for report in node.reports()]
    assert len(sources) == len(set(sources)) and acknowledged <= set(sources)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:  # make test installs it (with the other DICOM tools) and never skips
        if os.environ.get(ORTHANC_ENV):
            pytest.fail(f"{ORTHANC_ENV} is set but openssl is missing (apt-get install openssl)")
        pytest.skip("no openssl to make a test certificate (make test installs it)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "node.pem", folder / "node.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_serves_only_tls(tmp_path, certificate):
    cert, key = certificate
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    client.check_hostname = False
    images = make_study(tmp_path / "study", 2, STUDY)
    with NodeProcess(tmp_path / "node", free_port(), "--tls-cert", str(cert), "--tls-key", str(key)) as node:
        assert "(TLS)" in node.log
        assert echo(node.port, ssl_context=client) == 0
        assert send(node.port, images, ssl_context=client) == [0, 0]
        assert echo(node.port) == -1  # plain DICOM is not understood
        assert echo(node.port, ssl_context=client) == 0


def test_a_port_in_use_is_one_line_and_leaves_no_folder(tmp_path):
    from click.testing import CliRunner

    from s3f_edge.cli import main

    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["listen", str(tmp_path / "node"), "--allow", "PACS", "--port", str(port)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on" in lines[0] and "--port" in lines[0], result.stderr
    assert not (tmp_path / "node").exists()
