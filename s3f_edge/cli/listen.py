"""`s3f-edge listen FOLDER`: a DICOM node that classifies the images sent to it and sends back a DICOM SR of
each answer."""
from __future__ import annotations

from pathlib import Path

import click

from s3f_edge.cli.common import names, suffix
from s3f_edge.cli.support import Command, ExistingPath, FiniteFloat, OutputPath
from s3f_edge.runtime.formats import MODEL_SUFFIXES


@click.command("listen", cls=Command)
@click.argument("folder", type=OutputPath(file_okay=False))
@click.option("--ae-title", default="S3FEDGE", show_default=True, help="The node's own AE title.")
@click.option("--port", type=click.IntRange(0, 65535), default=11112, show_default=True,
              help="The DICOM port to listen on (0: any free port, named in the first log line).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; 0.0.0.0 for every interface (the scanner's or PACS's network).")
@click.option("--allow", "allowed", multiple=True, metavar="AE_TITLE",
              help="A calling AE title that may send images (repeat for each scanner or PACS); others are "
                   "rejected when they ask to associate.")
@click.option("--allow-any", is_flag=True, help="Accept any calling AE title (a trusted network only).")
@click.option("--send-to", "destinations", multiple=True, metavar="DESTINATION",
              help="Where each report goes: AE_TITLE@host:port (C-STORE) or a DICOMweb URL such as "
                   "http://pacs:8042/dicom-web (STOW-RS); repeat for several. Without it, reports stay in "
                   "FOLDER/reports.")
@click.option("--model", "model_path", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              callback=suffix(*MODEL_SUFFIXES, what="--model"),
              help="A model exported by s3f-edge (default: the bundled model).")
@click.option("--providers", default=None, help="ONNX Runtime providers in order (default: the best available).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Images per model call, at most.")
@click.option("--max-wait", type=FiniteFloat(0), default=0.5, show_default=True,
              help="Seconds a received image waits for others to fill its batch.")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="Parallel image decoders.")
@click.option("--accept-ood", is_flag=True,
              help="Classify images unlike the model's training images too, instead of refusing them.")
@click.option("--ood-threshold", type=FiniteFloat(), default=None,
              help="Refuse images whose out-of-distribution score is above this (default: the model's own).")
@click.option("--max-dataset-mb", type=FiniteFloat(0, min_open=True), default=256.0, show_default=True,
              help="The largest dataset accepted; a larger one is refused (status A700).")
@click.option("--max-pdu-kb", type=click.IntRange(0), default=256, show_default=True,
              help="The largest PDU the node offers to receive (0: no limit); a peer sending larger ones is cut off.")
@click.option("--tls-cert", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              help="Serve DICOM over TLS with this certificate (PEM) ...")
@click.option("--tls-key", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              help="... and this private key (PEM).")
@click.option("--tls-ca", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              help="With TLS: accept only senders whose certificate this CA (PEM) signed.")
@click.option("--retry-max", type=FiniteFloat(0, min_open=True), default=60.0, show_default=True,
              help="Longest wait, in seconds, between tries of a destination that is down (the wait doubles "
                   "from 1 s).")
@click.option("--study-quiet", type=FiniteFloat(0), default=5.0, show_default=True,
              help="Seconds without news of a study before its log line is written.")
def listen(folder, ae_title, port, host, allowed, allow_any, destinations, model_path, providers, batch_size,
           max_wait, workers, accept_ood, ood_threshold, max_dataset_mb, max_pdu_kb, tls_cert, tls_key, tls_ca,
           retry_max, study_quiet):
    """Receive DICOM images (C-STORE), classify them, and send a DICOM SR of each answer to the PACS.

    Every image is on disk in FOLDER before the sender hears Success; it is classified in
    micro-batches exactly as infer would (the same rows, in FOLDER/results/DAY.csv), and its SR
    (the one infer --dicom-sr writes) is kept in FOLDER/reports and sent to every --send-to,
    tried again while a destination is down. Killed at any moment, the node answers on its next
    start every image it had acknowledged; unsent reports wait in FOLDER/outbox. One log line per
    study: received, classified, refused, failed and sent. Stop with SIGTERM or Ctrl-C.
    """
    from s3f_edge.dicom.node import NodeOptions, serve

    if allowed and allow_any:
        raise click.UsageError("--allow names who may send and --allow-any accepts everyone: give one of them")
    if not allowed and not allow_any:
        raise click.UsageError("give the calling AE titles that may send images with --allow (or --allow-any)")
    options = NodeOptions(folder, ae_title=ae_title, host=host, port=port,
                          allowed=None if allow_any else list(allowed), destinations=list(destinations),
                          model=model_path, providers=names(providers), batch_size=batch_size, workers=workers,
                          accept_ood=accept_ood, ood_threshold=ood_threshold, max_wait=max_wait,
                          max_dataset_mb=max_dataset_mb, max_pdu_kb=max_pdu_kb, tls_cert=tls_cert, tls_key=tls_key,
                          tls_ca=tls_ca, retry_max=retry_max, study_quiet=study_quiet)
    for problem in options.usage_problems():
        raise click.UsageError(problem)
    serve(options, log=lambda line: click.echo(line, err=True))
