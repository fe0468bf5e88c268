"""The errors a user can cause and fix. The CLI catches ``S3FEdgeError`` once: it prints the message
and exits 1. Any other exception is a bug and shows its traceback.

Each class also derives from the built-in exception that fits it (``ValueError``, ``RuntimeError``, ...), so that
code which catches the built-in one, as callers of a library expect to, catches it too.
"""
from __future__ import annotations


class S3FEdgeError(Exception):
    """Base of every error the user can fix; the message says what to do next."""


class InputError(S3FEdgeError, ValueError):
    """An option, file or folder that cannot be used as given."""


class MissingFileError(S3FEdgeError, FileNotFoundError):
    """A file or folder the command needs does not exist."""


class OutputExistsError(S3FEdgeError, FileExistsError):
    """The command would overwrite earlier results (it does only when told to, with --overwrite)."""


class OutputError(S3FEdgeError, OSError):
    """An output location cannot be written (no such place, a file in the way, no permission, read-only)."""


class MissingDependencyError(S3FEdgeError, ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


class DicomSRError(InputError):
    """A DICOM source, or a result row for it, that cannot get a Structured Report; the message says why."""


class DestinationDown(S3FEdgeError, ConnectionError):
    """A DICOM node's destination cannot be reached or refused a whole request: its SRs wait in the outbox and are
    sent again later (never shown to a user as an error: a log line says so)."""


class NonFiniteOutputError(S3FEdgeError, ValueError):
    """A model produced NaN or infinite outputs, so its results mean nothing."""


class BackendError(S3FEdgeError, RuntimeError):
    """An inference engine (ONNX Runtime, TensorRT, CUDA) failed to load or run a model."""


class DatasetError(S3FEdgeError, ValueError):
    """The folder cannot be used as a dataset; the message says what to fix."""


class ImageDecodeError(S3FEdgeError, ValueError):
    """A file that cannot be turned into model pixels; the message says why."""


class ModelContractError(S3FEdgeError, ValueError):
    """The model lacks, or carries an unusable, description of its classes and input pixels."""


class TensorRTUnavailable(S3FEdgeError, RuntimeError):
    """TensorRT, cuda-python or an NVIDIA GPU is missing here."""


class EngineMismatch(S3FEdgeError, RuntimeError):
    """The engine was built for another GPU model or TensorRT version (or has no sidecar)."""


class ExportCheckError(S3FEdgeError, RuntimeError):
    """The exported graph is not a valid, standard, deployable ONNX model; the message lists why."""


class ParityError(S3FEdgeError, RuntimeError):
    """The exported model does not compute the Keras model's function within tolerance."""


class WorkersDisagreeError(S3FEdgeError, RuntimeError):
    """The workers reached different decisions; their weights or their data are not in sync."""
