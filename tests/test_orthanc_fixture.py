"""The Orthanc fixture itself (tests/orthanc.py): it starts and stops by PID, finds what it stores by REST and
QIDO-RS, keeps it across a restart, sends it to a DICOM node by C-STORE and accepts DICOM from this machine only."""
import io
import os
import socket
import threading

import pydicom
import pytest
from orthanc import LOOPBACK, Orthanc, free_port, needs_orthanc, wait_for
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage, SecondaryCaptureImageStorage

from s3f_edge.testing import SAMPLE_IMAGES, dicom_from_image

pytestmark = needs_orthanc


@pytest.fixture
def mr_image(tmp_path):
    """A DICOM MR image made from a sample, and its dataset."""
    image = sorted((SAMPLE_IMAGES / "test").glob("*/*.jpg"))[0]
    path = dicom_from_image(image, tmp_path / "image.dcm")
    return path, pydicom.dcmread(path)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def test_starts_answers_and_stops_by_pid(tmp_path):
    pacs = Orthanc(tmp_path / "pacs", aet="TESTPACS")
    with pacs:
        pid = pacs.pid
        assert pacs.running() and process_exists(pid)
        system = pacs.get("/system")
        assert system["DicomAet"] == "TESTPACS" and system["DicomPort"] == pacs.dicom_port
        assert system["Version"].startswith("1.")
        plugins = pacs.get("/plugins")
        assert "dicom-web" in plugins, plugins
        assert port_open(pacs.dicom_port) and port_open(pacs.http_port)
        assert pacs.dicomweb_url == f"http://127.0.0.1:{pacs.http_port}/dicom-web"
    assert pacs.process.returncode == 0, pacs.log_tail()  # a clean stop on SIGTERM
    assert not process_exists(pid)
    assert not port_open(pacs.dicom_port) and not port_open(pacs.http_port)


def test_finds_an_upload_by_rest_and_qido_and_keeps_it_across_restart(tmp_path, mr_image):
    path, dataset = mr_image
    study_uid = dataset.StudyInstanceUID
    with Orthanc(tmp_path / "pacs") as pacs:
        assert pacs.study_id(study_uid) is None and pacs.instances_of_study(study_uid) == []
        stored = pacs.upload(path)
        assert stored["Status"] == "Success"
        assert pacs.upload(path)["Status"] == "AlreadyStored"
        assert pacs.study_id(study_uid) == stored["ParentStudy"]
        found = pacs.instances_of_study(study_uid)
        assert [(i["ID"], i["SOPInstanceUID"], i["Modality"]) for i in found] == [
            (stored["ID"], dataset.SOPInstanceUID, "MR")]
        assert pacs.instances_of_study(study_uid, modality="SR") == []
        qido = pacs.qido_instances(study_uid)
        assert [item["00080018"]["Value"][0] for item in qido] == [dataset.SOPInstanceUID]
        assert pacs.qido_instances(study_uid, Modality="SR") == []
        pid, ports = pacs.pid, (pacs.http_port, pacs.dicom_port)

        pacs.restart()
        assert pacs.pid != pid and not process_exists(pid) and (pacs.http_port, pacs.dicom_port) == ports
        found = pacs.instances_of_study(study_uid)
        assert [i["SOPInstanceUID"] for i in found] == [dataset.SOPInstanceUID]
        copy = pydicom.dcmread(io.BytesIO(pacs.download(found[0]["ID"])))
        assert copy.SOPInstanceUID == dataset.SOPInstanceUID and copy.PixelData == dataset.PixelData


def test_store_to_delivers_to_a_storage_scp(tmp_path, mr_image):
    path, dataset = mr_image
    received, lock = [], threading.Lock()

    def on_store(event):
        with lock:
            received.append((event.assoc.requestor.ae_title, event.dataset))
        return 0x0000

    scp = AE(ae_title="TEST_SCP")
    for sop_class in (MRImageStorage, SecondaryCaptureImageStorage):
        scp.add_supported_context(sop_class)
    port = free_port()
    server = scp.start_server((LOOPBACK, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        with Orthanc(tmp_path / "pacs", aet="TESTPACS", modalities={"SCP": ("TEST_SCP", LOOPBACK, port)}) as pacs:
            study = pacs.upload(path)["ParentStudy"]
            result = pacs.store_to("SCP", study)
            assert result["InstancesCount"] == 1 and result["FailedInstancesCount"] == 0, result
            assert [(aet, ds.SOPInstanceUID) for aet, ds in received] == [("TESTPACS", dataset.SOPInstanceUID)]
            assert received[0][1].PixelData == dataset.PixelData

            pacs.add_modality("AGAIN", "TEST_SCP", LOOPBACK, port)  # registered at run time, kept by restart()
            pid = pacs.pid
            pacs.restart(crash=True)  # SIGKILL: the stored study survives that too
            assert not process_exists(pid) and "AGAIN" in pacs.get("/modalities")
            job = pacs.store_to("AGAIN", [study], synchronous=False)
            assert "ID" in job, job
            wait_for(lambda: len(received) == 2, timeout=20, what="the asynchronous C-STORE")
    finally:
        server.shutdown()


def address_beside_loopback() -> str | None:
    """An IPv4 address of this machine other than the loopback's (connecting to it comes from it), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # UDP: no packet is sent, the kernel only picks the source address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_takes_dicom_from_this_machine_only(tmp_path, mr_image):
    """Orthanc 1.10 listens on every interface: instances that come from another address are discarded, and the
    REST API refuses other addresses."""
    _, dataset = mr_image
    address = address_beside_loopback()
    if address is None:
        pytest.skip("this machine has no IPv4 address but the loopback")
    with Orthanc(tmp_path / "pacs") as pacs:
        scu = AE(ae_title="STRANGER")
        scu.add_requested_context(MRImageStorage)
        for host, kept in ((address, []), (LOOPBACK, [dataset.SOPInstanceUID])):
            association = scu.associate(host, pacs.dicom_port, ae_title=pacs.aet)
            assert association.is_established, host
            try:  # Success even when discarded (see tests/orthanc.py)
                assert association.send_c_store(dataset).Status == 0x0000, host
            finally:
                association.release()
            assert [i["SOPInstanceUID"] for i in pacs.instances_of_study(dataset.StudyInstanceUID)] == kept, host
        assert pacs.session.get(f"http://{address}:{pacs.http_port}/system", timeout=5).status_code in (401, 403)
