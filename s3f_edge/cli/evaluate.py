"""`s3f-edge evaluate MODEL DATA/`: metrics, calibration error, refusal and plots of a model file."""
from __future__ import annotations

from pathlib import Path

import click

from s3f_edge.cli.common import (
    needs,
    suffix,
    table,
)
from s3f_edge.cli.support import (
    Command,
    ExistingPath,
    OutputPath,
    overwrite_option,
)
from s3f_edge.runtime.formats import MODEL_SUFFIXES


@click.command("evaluate", cls=Command)
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(*MODEL_SUFFIXES, what="MODEL"))
@click.argument("data", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=OutputPath(), default=None,
              help="Where to write metrics.json, skipped.csv and the plots (default: beside the model, "
                   "evaluate-<folder>; runs/default-model/evaluate-<folder> for the bundled model).")
@overwrite_option("--out")
@click.option("--exclude", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              help="File of names or relative paths to leave out (e.g. duplicates of training images), one per line.")
@click.option("--ood", "ood_folders", multiple=True, type=ExistingPath(file_okay=False, path_type=Path),
              help="A folder of images of another kind (repeat for several): measure how well the model's "
                   "out-of-distribution score refuses them (AUROC, FPR at 95%, share refused). Calibrated models only.")
@click.option("--report", "report_page", type=OutputPath(dir_okay=False), default=None,
              callback=suffix(".html", what="--report"),
              help="Also write a review page: one self-contained HTML file with the metrics, a confusion matrix "
                   "that opens onto its images, the curves and the most confident mistakes.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(model_path, data, out_dir, overwrite, exclude, ood_folders, report_page, batch_size, quiet):
    """Score MODEL (.keras from s3f-edge train, or an .onnx/.engine from s3f-edge export) on the labelled folder DATA.

    DATA is DATA/<class>/* (or a dataset root with test/). The classes must match the model's.
    Writes metrics.json (with the expected calibration error, ECE), skipped.csv, the confusion
    matrix, ROC curves and a reliability diagram; for a calibrated model also the share of DATA it
    refuses and its accuracy on the images it accepts.
    """
    needs("scoring (metrics and plots)", ("sklearn", "matplotlib"))
    from s3f_edge.train.evaluate import evaluate_folder

    if out_dir is None:
        from s3f_edge.runtime.predictor import beside_model

        out_dir = beside_model(model_path) / f"evaluate-{data.name}"
    report = evaluate_folder(model_path, data, out_dir, exclude=exclude, batch_size=batch_size, overwrite=overwrite,
                             progress=not quiet, ood_folders=list(ood_folders), report_page=report_page)
    m = report["metrics"]
    auc = "-" if m["roc_auc_macro"] is None else f"{m['roc_auc_macro']:.4f}"
    click.echo(table(["images", "excluded", "skipped", "accuracy", "F1 macro", "F1 weighted", "kappa", "MCC",
                       "AUC macro", "ECE"],
                      [[m["count"], report["excluded_files"], report["skipped_files"], f"{m['accuracy']:.4f}",
                        f"{m['f1_macro']:.4f}", f"{m['f1_weighted']:.4f}", f"{m['cohen_kappa']:.4f}",
                        f"{m['mcc']:.4f}", auc, f"{m['ece']:.4f}"]]))
    ood = report.get("ood")
    if ood:
        accepted = "-" if ood["accuracy_accepted"] is None else f"{ood['accuracy_accepted']:.4f}"
        rows = [[data, m["count"], f"{ood['refused']:.1%}", "-", "-", f"accuracy {m['accuracy']:.4f}, on accepted "
                 f"{accepted}"]]
        rows += [[folder, f["images"], f"{f['refused']:.1%}", f"{f['auroc']:.4f}", f"{f['fpr_at_95']:.1%}",
                  f"{f['unreadable']} unreadable" if f["unreadable"] else ""] for folder, f in ood["folders"].items()]
        click.echo(f"\nout-of-distribution refusal (threshold {ood['threshold']:.3f}):")
        click.echo(table(["folder", "images", "refused", "AUROC", "FPR at 95%", "note"], rows))
    elif m["count"]:
        click.echo("\n(this model has no out-of-distribution score: it cannot refuse; see s3f-edge calibrate)")
    sets = report.get("sets")
    if sets and sets["count"]:
        low, high = sets["coverage_interval"]
        per_class = ", ".join(f"{name} {value:.1%}" for name, value in sets["coverage_per_class"].items())
        click.echo(f"\nprediction sets ({sets['method'].upper()}, calibrated for {sets['target_coverage']:.0%} "
                   f"coverage) on the {sets['count']} accepted images:")
        click.echo(table(["coverage", "95% interval", "mean size", "single class", "empty", "coverage per class"],
                         [[f"{sets['coverage']:.1%}", f"{low:.1%}-{high:.1%}", f"{sets['mean_size']:.3f}",
                           f"{sets['single']:.1%}", f"{sets['empty']:.1%}", per_class]]))
    selective = report.get("selective")
    if selective and m["count"]:
        click.echo(f"\nselective classification by top probability: AURC {selective['aurc']:.4f} (a perfect ranking "
                   f"of the same errors: {selective['aurc_optimal']:.4f})")
    click.echo(f"\nreport: {out_dir / 'metrics.json'}" + (f"; review page: {report_page}" if report_page else ""))
