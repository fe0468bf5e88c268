"""The s3f-edge command line: one module per command, registered by name in ``COMMANDS``.

Each command module only parses its options, calls one library function (the tests and the Python API call the
same one) and prints what it returned. Only click and the plain option tables load when the command line starts;
each command imports what it needs, so `infer` and `bench` on ONNX or TensorRT files never load TensorFlow. How
errors, exit codes and interrupts are reported lives in ``cli.support``; what happens to existing outputs in
``s3f_edge.outputs``.
"""
from __future__ import annotations

from importlib import import_module

import click

from s3f_edge.cli.support import Group

# Command name -> its module in this package, in the order `s3f-edge --help` lists them.
COMMANDS = {
    "presets": "presets", "train": "train", "calibrate": "calibrate", "evaluate": "evaluate",
    "precise-bn": "precise_bn", "export": "export", "infer": "infer", "listen": "listen", "report": "report",
    "verify": "verify", "bench": "bench", "matrix": "matrix", "fft-check": "fft_check",
}


class Registry(Group):
    """The group of the commands in ``COMMANDS``, listed in that order."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)


@click.group(cls=Registry, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="s3f-edge")
@click.option("--verbose", is_flag=True, help="Show TensorFlow/CUDA native log lines (also: S3F_EDGE_VERBOSE=1).")
def main(verbose: bool) -> None:
    """s3f-edge: train, check and evaluate S3F-Net, the spatial-spectral medical image classifier.

    \b
    Typical use:
      s3f-edge presets                      the original four configurations and their sizes
      s3f-edge train DATA/ --out runs/a     train with a held-out validation split
      s3f-edge evaluate runs/a/model.keras DATA/test
      s3f-edge calibrate M.keras DATA/      honest probabilities and refusal of images unlike the training ones
      s3f-edge precise-bn M.keras DATA/     population BatchNorm statistics for a model trained elsewhere
      s3f-edge export runs/a/model.keras    ONNX (+ TensorRT, Triton), verified against Keras
      s3f-edge infer FOLDER/ --model M      one result row per file (CSV, JSONL or JSON)
      s3f-edge verify M.keras M.onnx        deployed backends against Keras on real images
      s3f-edge bench M.keras M.onnx         latency percentiles, throughput, FLOP/s vs this machine's GEMM
      s3f-edge matrix M.keras DATA/test     accuracy x speed of every export (ONNX FP32/FP16/INT8, TensorRT)
      s3f-edge fft-check IMAGES/            the FFT and DFT-as-matmul forms against numpy

    \b
    Outputs: a command never replaces earlier results unless given --overwrite.
    Exit codes: 0 success; 1 an error to fix (the one-line message says how); 2 a usage
    error; 3 infer: some files could not be classified; 130 interrupted.
    """


for _name, _module in COMMANDS.items():
    main.add_command(getattr(import_module(f"s3f_edge.cli.{_module}"), _module), _name)
