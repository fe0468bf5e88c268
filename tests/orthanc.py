"""A real PACS for the DICOM node's tests: Orthanc with its DICOMweb plugin (Debian's orthanc and orthanc-dicomweb),
run as a child process on free ports with its database in a test's folder. `make test` installs both and sets
S3F_EDGE_REQUIRE_ORTHANC, so a missing Orthanc fails the tests there instead of skipping them.

    with Orthanc(tmp_path, modalities={"NODE": ("S3F_EDGE", "127.0.0.1", port)}) as pacs:
        pacs.upload(path); pacs.store_to("NODE", pacs.study_id(study_uid))

Orthanc 1.10 has no option to bind its servers to one address: they listen on every interface. So the configuration
lets in only this machine: the HTTP server refuses other hosts (RemoteAccessAllowed false: 401), instances that arrive
by DICOM from another address are discarded (a Lua ReceivedInstanceFilter; the caller is still answered Success), a
registered modality is known only from its own address (DicomCheckModalityHost), and C-FIND, C-GET and C-MOVE are
refused to unregistered callers (the default). C-ECHO is answered to anyone.

Orthanc keeps the first copy of an instance: sent again (by C-STORE, STOW-RS or POST /instances), even with other
contents, it answers success (C-STORE status 0, STOW-RS 200 with the instance in ReferencedSOPSequence, REST
"AlreadyStored") and neither stores a second one nor replaces the first (OverwriteInstances is false).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import requests

ORTHANC_ENV = "S3F_EDGE_REQUIRE_ORTHANC"  # set by `make test` (which installs Orthanc): the PACS tests never skip
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian's orthanc-dicomweb
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for Orthanc to answer GET /system
STOP_TIMEOUT = 15.0  # seconds after SIGTERM before SIGKILL

# Discards instances that come by DICOM from another machine (Orthanc 1.10 listens on every interface). The caller is
# still answered Success: ReceivedCStoreInstanceFilter, whose DIMSE status would refuse them, is broken in 1.10.1 (it
# stores the instance whatever status the script returns).
LOOPBACK_ONLY_LUA = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  if origin["RequestOrigin"] == "DicomProtocol" then
    return origin["RemoteIp"] == "{LOOPBACK}"
  end
  return true
end
"""

T = TypeVar("T")


def orthanc_binary() -> str | None:
    """The Orthanc program: on the PATH, or in /usr/sbin where Debian puts it (outside a user's PATH)."""
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")


def orthanc_missing() -> str | None:
    """Why Orthanc with its DICOMweb plugin cannot run here, or None."""
    if orthanc_binary() is None:
        return "Orthanc not found (apt-get install orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.is_file():
        return f"the DICOMweb plugin {DICOMWEB_PLUGIN} is missing (apt-get install orthanc-dicomweb)"
    return None


needs_orthanc = pytest.mark.skipif(orthanc_missing() is not None and not os.environ.get(ORTHANC_ENV),
                                   reason=f"no Orthanc: {orthanc_missing()} (make test installs it)")


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1, what: str = "") -> T:
    """Call ``predicate`` until it returns something true, and return that; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g} s waiting for {what or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def _ends_with_parent() -> Callable[[], None] | None:
    """``preexec_fn`` that has Linux send the child SIGTERM when this process dies, so that a test run that is
    killed leaves no Orthanc behind holding its ports; None elsewhere."""
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


class OrthancError(RuntimeError):
    """Orthanc did not start, or its REST API answered with an error."""


class Orthanc:
    """An Orthanc PACS in ``workdir`` on free ports (reached at 127.0.0.1, from this machine only), answering to
    ``aet``, knowing ``modalities`` (name -> (AET, host, port)). Start it with ``start()`` or ``with`` (about 0.1 s);
    ``stop()`` ends it by its PID (about 3.5 s)."""

    def __init__(self, workdir: str | Path, aet: str = "ORTHANC",
                 modalities: dict[str, tuple[str, str, int]] | None = None, lua_scripts: list[Path] = ()):
        self.workdir = Path(workdir)
        self.lua_scripts = [Path(path) for path in lua_scripts]  # besides the loopback-only filter
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self.process: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment between a test and its loopback PACS

    # ------------------------------------------------------------ the process

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def configuration(self) -> dict:
        """Orthanc's configuration: storage in ``workdir``, the DICOMweb plugin, this machine only, quiet."""
        lua = self.workdir / "loopback-only.lua"
        lua.write_text(LOOPBACK_ONLY_LUA)
        return {
            "Name": f"s3f-edge test PACS {self.aet}",
            "StorageDirectory": str(self.workdir / "orthanc-storage"),
            "IndexDirectory": str(self.workdir / "orthanc-index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,  # HTTP from this machine only
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomModalities": {name: list(modality) for name, modality in self.modalities.items()},
            "DicomModalitiesInDatabase": False,  # the configuration holds them; add_modality keeps them for restart()
            "DicomCheckModalityHost": True,  # a registered AET from another address is a stranger
            "DicomAlwaysAllowStore": True,  # any caller's AET may store (from this machine: the Lua filter)
            "DicomAlwaysAllowEcho": True,
            "DicomCheckCalledAet": False,
            "DicomAssociationCloseDelay": 0,  # close Orthanc's own associations at once: test SCPs stop cleanly
            "DicomScuTimeout": 10,
            "LuaScripts": [str(lua), *map(str, self.lua_scripts)],
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "DicomThreadsCount": 2,
            "SaveJobs": False,
            "HttpDescribeErrors": True,
        }

    def start(self) -> Orthanc:
        """Launch Orthanc and wait (at most START_TIMEOUT s) until its REST API answers; raise OrthancError with
        the end of its log when it exits or does not answer in time."""
        reason = orthanc_missing()
        if reason:
            if os.environ.get(ORTHANC_ENV):
                pytest.fail(f"{ORTHANC_ENV} is set but {reason}")
            pytest.skip(f"no Orthanc: {reason}")
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.configuration(), indent=2))
        with open(self.log_path, "ab") as log:  # appended: a restart keeps what came before
            self.process = subprocess.Popen([orthanc_binary(), str(self.config_path)], cwd=self.workdir,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=_ends_with_parent())
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited with status {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise OrthancError(f"Orthanc did not answer within {START_TIMEOUT:g} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        """Whether the REST API answers GET /system and the DICOM port takes connections."""
        try:
            if not self.session.get(f"{self.http_url}/system", timeout=2).ok:
                return False
            with socket.create_connection((LOOPBACK, self.dicom_port), timeout=2):
                return True
        except (requests.RequestException, OSError):
            return False

    def stop(self, crash: bool = False) -> None:
        """End Orthanc by its PID: SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT s (a clean stop
        takes about 3.5 s); ``crash``: SIGKILL at once, a PACS that dies."""
        if self.process is None or self.process.poll() is not None:
            return
        if crash:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def restart(self, crash: bool = False) -> Orthanc:
        """Stop (``crash``: kill), then start again on the same ports with the same storage and modalities: a PACS
        that goes down and comes back."""
        self.stop(crash=crash)
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.session.close()

    # ------------------------------------------------------------ the REST API

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """``method`` on the REST API's ``path`` (from "/"); raise OrthancError, with Orthanc's answer, on an error."""
        answer = self.session.request(method, f"{self.http_url}{path}", timeout=kwargs.pop("timeout", 30), **kwargs)
        if not answer.ok:
            raise OrthancError(f"{method} {path}: HTTP {answer.status_code}: {answer.text[:2000]}")
        return answer

    def get(self, path: str, **kwargs):
        """The JSON answer to GET ``path``."""
        return self.request("GET", path, **kwargs).json()

    def upload(self, path: str | Path) -> dict:
        """Store a DICOM file through POST /instances; Orthanc's answer ({"ID", "Status": "Success" or
        "AlreadyStored", "ParentStudy", ...})."""
        return self.request("POST", "/instances", data=Path(path).read_bytes(),
                            headers={"Content-Type": "application/dicom"}).json()

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Register a DICOM modality (kept for restart())."""
        self.request("PUT", f"/modalities/{name}", json={"AET": aet, "Host": host, "Port": port})
        self.modalities[name] = (aet, host, port)

    def store_to(self, modality: str, resources: list[str] | str, synchronous: bool = True) -> dict:
        """C-STORE Orthanc resources (IDs of instances, series, studies or patients) to a registered modality;
        Orthanc's answer (synchronous: the job's result; else the job's ID)."""
        resources = [resources] if isinstance(resources, str) else list(resources)
        return self.request("POST", f"/modalities/{modality}/store",
                            json={"Resources": resources, "Synchronous": synchronous}, timeout=120).json()

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's ID of the study with this StudyInstanceUID, or None when it has no such study."""
        found = self.request("POST", "/tools/lookup", data=study_uid).json()
        return next((item["ID"] for item in found if item["Type"] == "Study"), None)

    def instances_of_study(self, study_uid: str, modality: str | None = None) -> list[dict]:
        """The instances of a study (of its series of ``modality``, if given), by the REST API: each instance's
        tags (simplified: keyword -> value) with its Orthanc ID under "ID" and its series' Modality; [] when there
        is no such study."""
        study = self.study_id(study_uid)
        if study is None:
            return []
        found = []
        for series in self.get(f"/studies/{study}/series"):
            series_modality = series["MainDicomTags"].get("Modality")
            if modality is not None and series_modality != modality:
                continue
            for instance in series["Instances"]:
                tags = self.get(f"/instances/{instance}/simplified-tags")
                found.append({**tags, "ID": instance, "Modality": tags.get("Modality", series_modality)})
        return sorted(found, key=lambda tags: tags.get("SOPInstanceUID", ""))

    def qido_instances(self, study_uid: str, **params) -> list[dict]:
        """The instances of a study by QIDO-RS (GET {dicomweb_url}/studies/{uid}/instances): DICOM JSON
        datasets; ``params`` are query keys (``Modality="SR"``, ``includefield="all"``)."""
        answer = self.session.get(f"{self.dicomweb_url}/studies/{study_uid}/instances", params=params,
                                  headers={"Accept": "application/dicom+json"}, timeout=30)
        if answer.status_code == 204 or (answer.ok and not answer.content):
            return []
        if not answer.ok:
            raise OrthancError(f"QIDO-RS {answer.url}: HTTP {answer.status_code}: {answer.text[:2000]}")
        return answer.json()

    def download(self, instance_id: str) -> bytes:
        """The DICOM file Orthanc stores for an instance."""
        return self.request("GET", f"/instances/{instance_id}/file").content
