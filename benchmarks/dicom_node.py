"""The DICOM node (`s3f-edge listen`) over the whole brain MRI test set: its speed from a sender's images to SRs in a
real PACS, against `infer` on the same files, and whether its memory stays flat over the run.

The test images as DICOM (``dicom_reports.dicom_test_set``, kept between runs with --keep), then, in one run:
`infer` over them alone and `infer --dicom-sr` (the SR work the node does), fastest of --rounds each, in turns;
then an Orthanc PACS (``tests/orthanc.py``) and the node, sending its SRs to Orthanc by C-STORE, as child
processes; DCMTK's storescu sends every file to the node over one association, timed from just before it starts
until Orthanc holds one SR per DICOM instance (and, apart, until storescu has finished: the receive rate, and until
the node has written every SR: its rate before sending). The node's RSS (VmRSS, its receiver process included) is
sampled every 0.2 s. Checked, else the script fails: one SR in Orthanc and one row in the node's results per
instance, the node's outbox empty, the node stopped by SIGTERM with status 0.

Orthanc and storescu run with TCP_NODELAY=1 (DCMTK's variable): without it, Debian's DCMTK leaves Nagle's
algorithm on, and on loopback each C-STORE to Orthanc waits out a delayed ACK (about 11 SRs/s whoever sends), which
would measure Orthanc's sockets rather than the node.

    S3F_EDGE_DATA=/path/to/data .venv/bin/python benchmarks/dicom_node.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # orthanc.py: a real Orthanc on free loopback ports

from dicom_reports import CLI, dicom_test_set, timed_infer  # noqa: E402  (benchmarks/ is the script's folder)
from orthanc import Orthanc, free_port, orthanc_missing  # noqa: E402
from results_files import write_results  # noqa: E402

from s3f_edge.bench.machine import describe_machine  # noqa: E402

NODE_AE, SENDER_AE = "S3FEDGE", "STORESCU"
SAMPLE_EVERY = 0.2  # seconds between samples of the node's RSS and of Orthanc's instance count
START_TIMEOUT = 120.0  # seconds until the node logs "listening on"
STALL_TIMEOUT = 300.0  # seconds without a new SR in Orthanc (or storescu still sending) before giving up
MIB = 2**20
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK programs: Nagle's algorithm off (see above)
QUIET_STUDY = re.compile(r"study \S+: \d+ received from \S+; \d+ classified, 0 refused, 0 failed; "
                         r"(\d+) of \1 report\(s\) sent to \S+$")
ROUTINE = re.compile(r"listening on |stopping: |stopped$")


def instance_uids(folder: Path) -> set[str]:
    """The SOP Instance UIDs of the DICOM files under ``folder``: files of identical pixels are one instance (their
    UIDs derive from the image), which the node spools, answers and reports once."""
    import pydicom

    return {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in folder.rglob("*.dcm")}


def rss_bytes(pid: int) -> int | None:
    """The resident set size (VmRSS) of process ``pid`` and of its child processes (the node's receiver), or None
    once it has exited."""
    try:
        own = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
    except (OSError, ValueError, StopIteration):
        return None
    return own + sum(rss_bytes(child) or 0 for child in children)


class Node:
    """``s3f-edge listen`` as a child process with its log in a file; stopped by SIGTERM to its PID."""

    def __init__(self, folder: Path, port: int, *options: str):
        self.folder, self.port, self.log_path = folder, port, folder.with_name(f"{folder.name}.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*CLI, "listen", str(folder), "--port", str(port), "--allow", SENDER_AE, *options],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise SystemExit(f"the node did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def running(self) -> bool:
        return self.process.poll() is None

    def reports(self) -> int:
        """SRs the node has written (and queued)."""
        return sum(1 for _ in (self.folder / "reports").glob("*/*.dcm"))

    def outbox(self) -> list[Path]:
        return sorted((self.folder / "outbox").rglob("*.dcm"))

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM, then wait (bounded): the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise SystemExit(f"the node did not stop within {timeout:g} s of SIGTERM:\n{self.log_tail()}") \
                    from None
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def rows(self) -> list[dict]:
        """Every row of the node's results files (read once it has stopped: the journals are folded in)."""
        from s3f_edge.results import read_results

        return [row for results in sorted((self.folder / "results").glob("*.csv")) for row in read_results(results)]


def sr_count(pacs: Orthanc) -> int:
    """The instances Orthanc holds: only the node's SRs (the images go to the node, not to Orthanc)."""
    return int(pacs.get("/statistics", timeout=10)["CountInstances"])


def run_node(scratch: Path, folder: Path, expected: int, batch_size: int, passes: int) -> dict:
    """Orthanc and the node, storescu sending ``folder`` to the node; the timings, the RSS samples and the checks."""
    for leftover in ("pacs", "node", "node.log", "storescu.log"):
        path = scratch / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    pacs = Orthanc(scratch / "pacs")
    saved = os.environ.get("TCP_NODELAY")
    os.environ["TCP_NODELAY"] = "1"  # Orthanc's process inherits this environment (the node's does not)
    try:
        pacs.start()
    finally:
        if saved is None:
            del os.environ["TCP_NODELAY"]
        else:
            os.environ["TCP_NODELAY"] = saved
    node = None
    try:
        node = Node(scratch / "node", free_port(), "--send-to", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
                    "--batch-size", str(batch_size), "--study-quiet", "1")
        idle_rss = rss_bytes(node.process.pid)
        samples: list[tuple[float, int, int]] = []  # (seconds since storescu started, RSS bytes, SRs in Orthanc)
        finished: dict[str, float] = {}
        with open(scratch / "storescu.log", "wb") as log:
            started = time.perf_counter()
            sender = subprocess.Popen(["storescu", "-aet", SENDER_AE, "-aec", NODE_AE, "+sd", "+r",
                                       "127.0.0.1", str(node.port), str(folder)],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV)

            def wait_sender() -> None:
                sender.wait()
                finished["storescu"] = time.perf_counter() - started

            waiter = threading.Thread(target=wait_sender, daemon=True)
            waiter.start()
            count, progress_at = 0, time.monotonic()
            while True:
                tick = time.perf_counter()
                rss = rss_bytes(node.process.pid)
                if rss is None or not node.running():
                    raise SystemExit(f"the node exited during the run:\n{node.log_tail()}")
                now_count = sr_count(pacs)
                samples.append((tick - started, rss, now_count))
                if "reports" not in finished and node.reports() >= expected:
                    finished["reports"] = time.perf_counter() - started
                if now_count != count:
                    count, progress_at = now_count, time.monotonic()
                if count >= expected:
                    finished["srs"] = time.perf_counter() - started
                    break
                if time.monotonic() - progress_at > STALL_TIMEOUT:
                    raise SystemExit(f"{count} of {expected} SRs in Orthanc, none new for {STALL_TIMEOUT:g} s:\n"
                                     f"{node.log_tail()}")
                time.sleep(max(0.0, SAMPLE_EVERY - (time.perf_counter() - tick)))
            waiter.join(timeout=60)
        if "storescu" not in finished:
            raise SystemExit("storescu still runs after every SR reached Orthanc")
        if sender.returncode != 0:
            raise SystemExit(f"storescu exited with status {sender.returncode}:\n"
                             f"{(scratch / 'storescu.log').read_text(errors='replace')[-3000:]}")
        deadline = time.monotonic() + 60
        while node.outbox() and time.monotonic() < deadline:  # an SR is unlinked just after Orthanc's Success
            time.sleep(0.1)
        outbox = len(node.outbox())
        time.sleep(1.5)  # anything more than one SR per instance would show now
        final_count = sr_count(pacs)
        after_passes = [rss_bytes(node.process.pid)]
        for _ in range(passes - 1):  # the same images again: replaced, answered and reported again
            resend = subprocess.run(["storescu", "-aet", SENDER_AE, "-aec", NODE_AE, "+sd", "+r", "127.0.0.1",
                                     str(node.port), str(folder)], capture_output=True, env=DCMTK_ENV)
            if resend.returncode != 0:
                raise SystemExit(f"storescu exited with status {resend.returncode} on a later pass")
            settled(node)
            after_passes.append(rss_bytes(node.process.pid))
        if sr_count(pacs) != final_count:
            raise SystemExit(f"Orthanc holds {sr_count(pacs)} SRs after the later passes, {final_count} before")
        status = node.stop()
        rows = node.rows()
    finally:
        if node is not None:
            node.kill()
        pacs.stop()
        pacs.session.close()
    log = node.log()
    return {"samples": samples, "idle_rss": idle_rss, "storescu_seconds": finished["storescu"],
            "srs_seconds": finished["srs"], "reports_seconds": finished.get("reports", finished["srs"]),
            "srs_in_orthanc": final_count, "outbox_left": outbox, "rows": rows, "node_status": status, "log": log,
            "rss_after_passes": after_passes}


def settled(node, quiet: float = 3.0, timeout: float = STALL_TIMEOUT) -> None:
    """Wait until the node's outbox is empty and no SR was written for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = max((_mtime(p) for p in (node.folder / "reports").glob("*/[!.]*.dcm")), default=0.0)
        if not node.outbox() and time.time() - newest >= quiet:
            return
        time.sleep(0.5)
    raise SystemExit(f"the node did not settle within {timeout:g} s:\n{node.log_tail()}")


def _mtime(path: Path) -> float:
    """A file's modification time, 0 for one replaced or removed since it was listed."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def rss_at(samples: list[tuple[float, int, int]], count: float) -> int:
    """The node's RSS at the first sample with at least ``count`` SRs in Orthanc."""
    return next(rss for _, rss, arrived in samples if arrived >= count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--limit", type=int, default=None, help="Use the first N test images only.")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Timed runs of `infer` and `infer --dicom-sr`, in turns; the fastest is kept (the node "
                             "runs once).")
    parser.add_argument("--batch-size", type=int, default=32, help="The node's batch size (and infer's).")
    parser.add_argument("--passes", type=int, default=3, help="Sends of the whole set to the node (the first timed; "
                        "the node's RSS is taken after each, to see whether it stays flat).")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the DICOM test set (and the node's folder, "
                        "its log and Orthanc's) in this folder.")
    args = parser.parse_args()
    missing = orthanc_missing()
    if missing or shutil.which("storescu") is None:
        raise SystemExit(f"this benchmark needs Orthanc and DCMTK: {missing or 'storescu not found'} "
                         "(make test installs orthanc, orthanc-dicomweb and dcmtk)")
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="s3f-edge-node-"))
    try:
        folder, images = dicom_test_set(scratch, args.limit)
        instances = instance_uids(folder)
        plain, reported = [], []
        batch = ("--batch-size", str(args.batch_size))
        for _ in range(args.rounds):  # in turns: the machine's slow and fast phases touch both alike
            plain.append(timed_infer(folder, scratch / "plain.csv", *batch))
            shutil.rmtree(scratch / "sr", ignore_errors=True)
            reported.append(timed_infer(folder, scratch / "sr.csv", *batch, "--dicom-sr", str(scratch / "sr")))
        run = run_node(scratch, folder, len(instances), args.batch_size, args.passes)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)

    rows, log = run.pop("rows"), run.pop("log")
    answered = {Path(row["path"]).stem for row in rows}
    problems = []
    if run["srs_in_orthanc"] != len(instances):
        problems.append(f"{run['srs_in_orthanc']} SRs in Orthanc for {len(instances)} DICOM instances")
    if len(rows) != len(instances) or answered != instances:
        problems.append(f"the node's results hold {len(rows)} rows ({len(answered)} instances) for "
                        f"{len(instances)} DICOM instances")
    if run["outbox_left"]:
        problems.append(f"{run['outbox_left']} SRs left in the node's outbox")
    if run["node_status"] != 0:
        problems.append(f"the node exited with status {run['node_status']} after SIGTERM")
    if problems:
        raise SystemExit("dicom_node: " + "; ".join(problems) + "\n" + "\n".join(log.splitlines()[-40:]))

    samples = run.pop("samples")
    expected = len(instances)
    rss = {f"{share}%": rss_at(samples, expected * share / 100) for share in (10, 50, 90)}
    rss["peak"] = max(value for _, value, _ in samples)
    infer_rate, sr_rate = images / min(plain), images / min(reported)
    node_rate, receive_rate = images / run["srs_seconds"], images / run["storescu_seconds"]
    written_rate = images / run["reports_seconds"]
    unusual = [line for line in log.splitlines()
               if not (QUIET_STUDY.search(line) or ROUTINE.search(line))]
    machine = describe_machine()
    result = {"images": images, "instances": expected, "batch_size": args.batch_size, "rounds": args.rounds,
              "infer_seconds": min(plain), "infer_dicom_sr_seconds": min(reported),
              "node_seconds": run["srs_seconds"], "storescu_seconds": run["storescu_seconds"],
              "reports_written_seconds": run["reports_seconds"],
              "infer_images_per_s": infer_rate, "infer_dicom_sr_images_per_s": sr_rate,
              "node_images_per_s": node_rate, "receive_images_per_s": receive_rate,
              "reports_written_images_per_s": written_rate,
              "node_vs_infer": node_rate / infer_rate, "node_vs_infer_dicom_sr": node_rate / sr_rate,
              "rss_mib": {key: value / MIB for key, value in rss.items()},
              "idle_rss_mib": (run["idle_rss"] or 0) / MIB, "rss_samples": len(samples),
              "srs_in_orthanc": run["srs_in_orthanc"], "rows": len(rows),
              "refused": sum(row["status"] == "refused" for row in rows),
              "log_unusual_lines": len(unusual), "log_unusual": unusual[:20],
              "machine": machine, "date": time.strftime("%Y-%m-%d")}
    mib = result["rss_mib"]
    lines = [f"| brain MRI test set as DICOM ({images:,} files, {expected:,} instances; bundled model, ONNX) "
             "| measured |", "|---|---|",
             f"| `infer` (files) | {infer_rate:.1f} images/s |",
             f"| `infer --dicom-sr` (files) | {sr_rate:.1f} images/s |",
             f"| `listen` → SRs in Orthanc (storescu start to the last SR stored) | {node_rate:.1f} images/s "
             f"({result['node_vs_infer']:.2f}× `infer`, {result['node_vs_infer_dicom_sr']:.2f}× "
             "`infer --dicom-sr`) |",
             f"| `listen` receiving only (storescu start to its end, one association) | {receive_rate:.1f} images/s |",
             f"| `listen` to its SRs written, before sending (storescu start to the last SR written) "
             f"| {written_rate:.1f} images/s |",
             f"| node RSS at 10 / 50 / 90 % of the SRs stored, peak (idle before: {result['idle_rss_mib']:.0f} MiB) "
             f"| {mib['10%']:.0f} / {mib['50%']:.0f} / {mib['90%']:.0f} / {mib['peak']:.0f} MiB |",
             f"| SRs in Orthanc / node's result rows / DICOM instances ({result['refused']} refused); outbox left "
             f"| {run['srs_in_orthanc']:,} / {len(rows):,} / {expected:,}; {run['outbox_left']} |", "",
             f"{machine['processor']}, {machine['cpus']} CPUs, {result['date']}; `infer` whole processes, fastest of "
             f"{args.rounds} run(s) of each in turns; the node timed once, already listening, Orthanc on the same "
             f"CPUs, --batch-size {args.batch_size}, Orthanc and storescu with TCP_NODELAY=1; "
             "`python benchmarks/dicom_node.py`."]
    after = " / ".join(f"{value / MIB:.0f}" for value in run["rss_after_passes"])
    lines.insert(-2, f"| node RSS after each pass of the whole set ({args.passes} passes: the same images sent again, "
                     f"answered and reported again) | {after} MiB |")
    result["rss_after_passes_mib"] = [value / MIB for value in run["rss_after_passes"]]
    write_results(args.out, "dicom_node", result, lines)


if __name__ == "__main__":
    main()
