"""The DICOM node between real DICOM components: Orthanc (a PACS) sends a study to the node and finds one SR per
image in the same study, sent back by C-STORE and by STOW-RS; DCMTK's echoscu and storescu as a second sender; a
SIGKILL of the node mid-study and a PACS that is down while the node sends lose no report."""
import subprocess
from pathlib import Path

import pytest
from dicom_judges import needs_dcmtk
from dicom_node import NodeProcess, make_study
from orthanc import Orthanc, free_port, needs_orthanc, wait_for

from s3f_edge.dicom.sr import read_sr_finding

pytest.importorskip("pynetdicom", reason="the dicom extra (make installs it)")
pytest.importorskip("highdicom", reason="the dicom extra (make installs it)")
pytestmark = needs_orthanc

STUDY = "1.2.826.0.1.3680043.10.1234.2"


def _sr_sources(pacs: Orthanc, study: str, tmp_path: Path) -> dict[str, dict]:
    """What each SR the PACS holds in ``study`` says, by its source image's SOP Instance UID (a source with two SRs
    fails the test)."""
    found = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for number, instance in enumerate(pacs.instances_of_study(study, modality="SR")):
        path = tmp_path / f"sr-{number}.dcm"
        path.write_bytes(pacs.download(instance["ID"]))
        finding = read_sr_finding(path)
        assert finding["source_sop_instance_uid"] not in found, "two SRs of one image"
        assert finding["study_instance_uid"] == study
        found[finding["source_sop_instance_uid"]] = finding
    return found


def _sr_count(pacs: Orthanc, study: str) -> int:
    return len(pacs.instances_of_study(study, modality="SR")) if pacs.study_id(study) else 0


def test_a_study_sent_by_the_pacs_comes_back_with_an_sr_per_image(tmp_path):
    images = make_study(tmp_path / "study", 12, STUDY)
    port = free_port()
    with Orthanc(tmp_path / "pacs", modalities={"NODE": ("S3FEDGE", "127.0.0.1", port)}) as pacs, \
            Orthanc(tmp_path / "archive", aet="ARCHIVE") as archive:
        for image in images:
            pacs.upload(image)
        with NodeProcess(tmp_path / "node", port, "--send-to", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
                         "--send-to", archive.dicomweb_url, allow="ORTHANC") as node:
            pacs.store_to("NODE", pacs.study_id(STUDY))
            wait_for(lambda: _sr_count(pacs, STUDY) == 12 and _sr_count(archive, STUDY) == 12, 90,
                     what="12 SRs in the PACS (C-STORE) and in the archive (STOW-RS)")
            qido = archive.qido_instances(STUDY, Modality="SR")
            assert len(qido) == 12
            rows = {Path(row["path"]).stem: row for row in node.rows()}
            wait_for(lambda: not node.outbox(), 30, what="an empty outbox")
            assert node.stop() == 0
        for where in (pacs, archive):
            found = _sr_sources(where, STUDY, tmp_path / where.aet)
            assert set(found) == set(rows) == {f"{STUDY}.1.{i + 1}" for i in range(12)}
            for uid, row in rows.items():
                assert found[uid]["finding"] == (row["predicted_class"] if row["status"] == "ok" else "not assessed")
    assert "12 received from ORTHANC" in node.log and "12 of 12 report(s) sent to ORTHANC@" in node.log, node.log


def test_the_documented_orthanc_routing_sends_new_images_to_the_node_and_not_its_reports(tmp_path):
    images = make_study(tmp_path / "study", 6, STUDY)
    port = free_port()
    route = Path(__file__).resolve().parent.parent / "docs" / "examples" / "orthanc-route-to-s3f-edge.lua"
    with Orthanc(tmp_path / "pacs", modalities={"s3f-edge": ("S3FEDGE", "127.0.0.1", port)},
                 lua_scripts=[route]) as pacs:
        with NodeProcess(tmp_path / "node", port, "--send-to", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
                         allow="ORTHANC") as node:
            for image in images:
                pacs.upload(image)  # as a scanner storing into the PACS
            wait_for(lambda: _sr_count(pacs, STUDY) == 6 and not node.outbox(), 90, what="6 SRs")
            assert node.stop() == 0
        assert set(_sr_sources(pacs, STUDY, tmp_path / "srs")) == {f"{STUDY}.1.{i + 1}" for i in range(6)}
    assert "refused a dataset" not in node.log, node.log  # the SRs stored in the PACS were not routed to the node


def test_sigkill_mid_study_then_restart_gives_every_spooled_image_one_sr(tmp_path):
    images = make_study(tmp_path / "study", 40, STUDY)
    port = free_port()
    with Orthanc(tmp_path / "pacs", modalities={"NODE": ("S3FEDGE", "127.0.0.1", port)}) as pacs:
        for image in images:
            pacs.upload(image)
        node = NodeProcess(tmp_path / "node", port, "--send-to", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
                           "--batch-size", "4", "--max-wait", "0.05", allow="ORTHANC")
        try:
            node.start()
            pacs.store_to("NODE", pacs.study_id(STUDY), synchronous=False)
            incoming = tmp_path / "node" / "incoming"
            wait_for(lambda: len(list(incoming.rglob("*.dcm"))) >= 10, 60, interval=0.005, what="10 images")
            node.kill()  # mid-study: while the PACS sends
            # Every image acknowledged was spooled first: the spool holds at least the acknowledged ones.
            spooled = {p.stem for p in incoming.rglob("*.dcm")}
            assert 10 <= len(spooled) < 40
            node.start()
            wait_for(lambda: _sr_count(pacs, STUDY) >= len(spooled), 90, what="an SR per spooled image")
            assert spooled <= set(_sr_sources(pacs, STUDY, tmp_path / "after-restart"))
            images_again = [item["ID"] for item in pacs.instances_of_study(STUDY, modality="MR")]
            pacs.store_to("NODE", images_again)  # the PACS sends every image again (not the SRs: no pixels)
            wait_for(lambda: _sr_count(pacs, STUDY) == 40 and not node.outbox(), 90, what="40 SRs")
            assert node.stop() == 0, node.log
        finally:
            node.kill()
        found = _sr_sources(pacs, STUDY, tmp_path / "final")
        assert set(found) == {f"{STUDY}.1.{i + 1}" for i in range(40)}


@needs_dcmtk
def test_a_pacs_down_while_the_node_sends_gets_its_reports_when_back(tmp_path):
    images = make_study(tmp_path / "study", 10, STUDY)
    port = free_port()

    def dcmtk(program: str, *files: Path) -> subprocess.CompletedProcess:
        command = [program, "-aet", "STORESCU", "-aec", "S3FEDGE", "127.0.0.1", str(port), *map(str, files)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    with Orthanc(tmp_path / "archive", aet="ARCHIVE") as archive:
        node = NodeProcess(tmp_path / "node", port, "--send-to", f"ARCHIVE@127.0.0.1:{archive.dicom_port}",
                           "--retry-max", "1", allow="STORESCU")
        try:
            node.start()
            assert dcmtk("echoscu").returncode == 0
            intruder = subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", "S3FEDGE", "127.0.0.1", str(port)],
                                      capture_output=True, text=True, timeout=60)
            assert intruder.returncode != 0 and "Rejected" in intruder.stderr + intruder.stdout
            archive.stop()
            assert dcmtk("storescu", *images[:5]).returncode == 0
            wait_for(lambda: len(node.outbox()) == 5, 60, what="5 reports waiting in the outbox")
            archive.start()  # back: the node's next try delivers
            wait_for(lambda: _sr_count(archive, STUDY) == 5 and not node.outbox(), 60, what="5 SRs delivered")
            archive.stop()
            assert dcmtk("storescu", *images[5:]).returncode == 0
            wait_for(lambda: len(node.outbox()) == 5, 60, what="5 more reports waiting")
            assert node.stop() == 0  # stopped with an outbox: kept on disk
            assert len(node.outbox()) == 5
            archive.start()
            node.start()
            wait_for(lambda: _sr_count(archive, STUDY) == 10 and not node.outbox(), 60, what="10 SRs delivered")
        finally:
            node.kill()
        assert set(_sr_sources(archive, STUDY, tmp_path / "srs")) == {f"{STUDY}.1.{i + 1}" for i in range(10)}
    log = node.log
    assert "cannot be reached" in log and "answers again" in log, log
