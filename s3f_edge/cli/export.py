"""`s3f-edge export MODEL.keras`: ONNX (FP32/FP16/INT8), TensorRT and Triton, checked and parity-tested."""
from __future__ import annotations

from pathlib import Path

import click

from s3f_edge.cli.common import (
    names,
    needs,
    suffix,
    table,
)
from s3f_edge.cli.support import (
    AliasedOption,
    Command,
    ExistingPath,
    OutputPath,
    overwrite_option,
)
from s3f_edge.export.choices import CALIBRATION_METHODS, FFT_LOWERINGS, PRECISIONS


def _batch_profile(ctx, param, value: str) -> tuple[int, int, int]:
    """--trt-batch as (min, opt, max): three batch sizes with 1 <= min <= opt <= max."""
    try:
        low, opt, high = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give min,opt,max batch sizes, e.g. 1,8,32") from None
    if not 1 <= low <= opt <= high:
        raise click.BadParameter(f"{value!r}: give min,opt,max with 1 <= min <= opt <= max, e.g. 1,8,32")
    return low, opt, high


@click.command("export", cls=Command)
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(".keras", what="MODEL (the trained model)"))
@click.option("--out", "out_dir", type=OutputPath(file_okay=False), default=None,
              help="Output folder (default: <model folder>/export).")
@overwrite_option("--out (and --triton): the earlier export's files are removed first, so no folder mixes two "
                  "models")
@click.option("--fft", type=click.Choice(FFT_LOWERINGS), default="matmul", show_default=True,
              help="How the SpectralFilter's FFT is lowered: 'matmul' (DFT as matrix products; every ONNX runtime "
                   "and TensorRT version) or 'dft' (standard ONNX DFT nodes; ONNX Runtime, TensorRT >= 11.2).")
@click.option("--opset", type=click.IntRange(13, 18), default=17, show_default=True,
              help="ONNX opset (DFT needs 17 or 18).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Also write an FP16 model (spectral block kept FP32) or a statically calibrated INT8 model.")
@click.option("--calib", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Folder of representative images for INT8 calibration (searched recursively; e.g. DATA/train).")
@click.option("--calib-images", type=click.IntRange(1), default=1024, show_default=True,
              help="INT8: how many of those images to calibrate on (a seeded random sample).")
@click.option("--calib-method", type=click.Choice(CALIBRATION_METHODS), default="percentile", show_default=True,
              help="INT8: how activation ranges are chosen from the calibration images.")
@click.option("--int8-weight-bits", type=click.Choice(["8", "7"]), default="8", show_default=True,
              help="INT8: 8-bit weights (more accurate; for TensorRT, ARM and x86 CPUs with VNNI) or 7-bit weights, "
                   "which ONNX Runtime also runs exactly on x86 CPUs without VNNI (there, 8-bit files are refused).")
@click.option("--data", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="The dataset a calibrated MODEL was calibrated on (DATA/train/<class>/...). Each file written is "
                   "run over the same validation images and gets its own temperature, refusal threshold and "
                   "prediction sets, and is refused if it decides too differently from FP32. Needed with "
                   "--precision fp16/int8 and --trt for a calibrated model.")
@click.option("--copy-calibration", is_flag=True,
              help="Without --data: copy the Keras model's temperature, refusal threshold and prediction sets into "
                   "the FP16/INT8 file and engine as they are (recorded as not fitted on the file: its refusal rate "
                   "and set coverage may differ from what they promise).")
@click.option("--images", "parity_images", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Real images for the parity check (default: 8 brain MRI images shipped with s3f-edge).")
@click.option("--trt", is_flag=True, help="Also build a TensorRT engine (needs an NVIDIA GPU and the gpu extra).")
@click.option("--trt-batch", default="1,8,32", show_default=True, callback=_batch_profile,
              help="TensorRT optimisation profile: min,opt,max batch.")
@click.option("--timing-cache", type=OutputPath(dir_okay=False), default=None,
              help="TensorRT timing cache to reuse across builds (default: <out>/timing.cache).")
@click.option("--triton", "triton_repo", type=OutputPath(file_okay=False), default=None,
              help="Also write a Triton Inference Server model repository here.")
@click.option("--class-codes", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              help="How DICOM reports (infer --dicom-sr) code each class: a .json {class: [code value, coding scheme, "
                   "meaning]} or .csv (class,code_value,scheme,meaning) file, e.g. SNOMED CT codes; stored in the "
                   "model (default: s3f-edge's private scheme 99S3FEDGE, the class name as code).")
@click.option("--class-names", "--classes", cls=AliasedOption, default=None,
              help="Comma-separated class names in output order, for models without s3f-edge metadata "
                   "(e.g. the original release's files).")
def export(model_path, out_dir, overwrite, fft, opset, precision, calib, calib_images, calib_method, int8_weight_bits,
           data, copy_calibration, parity_images, trt, trt_batch, timing_cache, triton_repo, class_codes, class_names):
    """Export a trained MODEL (.keras) to ONNX, checked and proven equal to Keras.

    Every SpectralFilter is lowered first (same weights, same outputs). The command fails if the
    graph is not valid standard ONNX of the opset, holds complex tensors, uses an op TensorRT's
    parser refuses (with --trt), or if ONNX Runtime's outputs differ from Keras's on real images
    and random inputs (fp32: max |p difference| <= 1e-4; fp16/int8: top-1 agreement >= 99%).
    Writes model.onnx and model.json (classes, preprocessing contract, provenance).
    """
    from s3f_edge.dependencies import EXPORT_STACK

    needs("export", EXPORT_STACK)
    from s3f_edge.export.onnx_export import ExportOptions, export_model

    options = ExportOptions(
        out_dir=out_dir or model_path.parent / "export", fft=fft, opset=opset, precision=precision, calib=calib,
        calib_images=calib_images, calib_method=calib_method, int8_weight_bits=int(int8_weight_bits),
        parity_images=parity_images, trt=trt, trt_batch=trt_batch, timing_cache=timing_cache,
        triton_repo=triton_repo, class_names=names(class_names), class_codes=class_codes, overwrite=overwrite,
        data=data, copy_calibration=copy_calibration,
    )
    result = export_model(model_path, options)
    click.echo(table(["format", "file", "MB", "status", "seconds"],
                      [[r["format"], r["file"], r["size_mb"], r["status"], r["seconds"]] for r in result.rows]))
    click.echo()
    def accuracy(p):
        if p.reference_accuracy is None:
            return "-"
        return f"{p.reference_accuracy:.1%} -> {p.candidate_accuracy:.1%}"

    def agreement(p):
        ties = f" ({p.near_ties} near-tie{'s' if p.near_ties != 1 else ''} flipped)" if p.near_ties else ""
        return f"{p.top1_agreement:.1%}{ties}"

    scored = any(p.score_max_rel_diff is not None for results in result.parity.values() for p in results)
    score_headers = ["ood_score rel. diff", "same refusal"] if scored else []

    def score_cells(p):
        if not scored:
            return []
        same = "-" if p.score_decision_agreement is None else f"{p.score_decision_agreement:.1%}"
        return [f"{p.score_max_rel_diff:.2e}", same]

    click.echo(table(["model", "inputs", "images", "max |p diff|", "top-1 agreement", "accuracy Keras -> ONNX",
                       *score_headers],
                      [[precision_name, p.inputs, p.count, f"{p.max_abs_diff:.2e}", agreement(p), accuracy(p),
                        *score_cells(p)] for precision_name, results in result.parity.items() for p in results]))
    if result.calibrations:
        from s3f_edge.export.guarantees import SUMMARY_HEADERS, summary_rows

        images = next(iter(result.calibrations.values()))["agreement_with_fp32"]["images"]
        click.echo(f"\nEach file's own calibration, fitted on its outputs over the {images} validation images:")
        click.echo(table(SUMMARY_HEADERS, summary_rows(result.calibrations)))
