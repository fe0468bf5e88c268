"""For tests, benchmarks and studies, not for deployment: where the example datasets are, and synthetic models
whose outputs really depend on their input (a freshly built network's hardly do).

Nothing here is imported by the package itself. Keras is imported only when a model is made.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "S3F_EDGE_DATA"
CHECKOUT = Path(__file__).resolve().parent.parent  # the repository, when the package runs from a checkout
SAMPLE_IMAGES = CHECKOUT / "samples" / "brain_mri"


def interruptible_child() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: a shell starts background jobs with SIGINT
    ignored, and a child inherits that, so without this a suite run in the background could not test Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def data_root() -> Path | None:
    """The folder holding the example datasets (brain_tumor_mri/, busi/), as $S3F_EDGE_DATA names it, or None
    when the variable is unset: there is no default location, so nothing outside the checkout is read unasked."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value) if value else None


def data_missing(dataset: str = "") -> str | None:
    """Why the example dataset ``dataset`` (a folder under the data root; "": the root itself) cannot be used here,
    naming $S3F_EDGE_DATA (a test's skip reason), or None when it is there."""
    root = data_root()
    if root is None:
        return f"{DATA_ENV} is not set: set it to the folder holding the example datasets (brain_tumor_mri/, busi/)"
    folder = root / dataset
    return None if folder.is_dir() else f"{folder} is not a folder: {DATA_ENV}={root} holds no {dataset or 'datasets'}"


def require_data(dataset: str = "", option: str | None = None) -> Path:
    """For benchmark and study scripts: the example dataset ``dataset`` under $S3F_EDGE_DATA; without it, exit
    with one line on stderr that names $S3F_EDGE_DATA (and the script's ``option`` that gives the folder directly)."""
    reason = data_missing(dataset)
    if reason:
        raise SystemExit(f"error: {reason}" + (f"; or give {option}" if option else ""))
    return data_root() / dataset


def _statistics_images(height: int, width: int, channels: int):
    import numpy as np

    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import Preprocessing, load_image

    folder = SAMPLE_IMAGES / "train"
    if not folder.is_dir():  # an installed package without the checkout's samples: the packaged parity images
        folder = Path(__file__).resolve().parent / "assets" / "parity"
    contract = Preprocessing(height=height, width=width, channels=channels)
    return np.stack([load_image(path, contract) for path in image_files(folder)[::3]])


def input_sensitive(model, logit_scale: float = 4.0):
    """Give a freshly built model's BatchNorm layers real statistics and widen its head's logits, so that parity
    checks and benchmarks compare something.

    Args:
        model: a Keras model built by ``s3f_edge.build_model``.
        logit_scale: factor on the head's kernel.

    Returns:
        The same model, changed in place.
    """
    import keras

    height, width, channels = model.input_shape[1:]
    # Real images, so that the statistics fit the images the tests feed (uniform noise would not).
    x = _statistics_images(height, width, channels)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in norms:
        layer.momentum = 0.99
    head = model.get_layer("probs") if any(layer.name == "probs" for layer in model.layers) else model.layers[-1]
    head.kernel.assign(head.kernel.numpy() * logit_scale)
    return model


def saved_model(path: str | Path, preset: str, input_shape, kind: str = "s3f", class_names: list[str] | None = None,
                seed: int = 0, **kwargs) -> Path:
    """Build a model (seeded: results must not depend on the draw), make it input-sensitive and save it with
    s3f-edge metadata, as train would.

    Args:
        path: the .keras file to write.
        preset, input_shape, kind, kwargs: as for ``s3f_edge.build_model``.
        class_names: its classes (default class_0, class_1, ...).
        seed: seeds the weights.

    Returns:
        ``path``.
    """
    import keras

    from s3f_edge.data.preprocess import Preprocessing
    from s3f_edge.model import build_model
    from s3f_edge.model.metadata import save_model_atomically

    keras.utils.set_random_seed(seed)
    model = input_sensitive(build_model(preset, kind=kind, input_shape=input_shape, **kwargs))
    outputs = model.output_shape[-1]
    names = class_names or [f"class_{i}" for i in range(2 if outputs == 1 else outputs)]
    height, width, channels = input_shape
    metadata = {"class_names": names, "preprocessing": Preprocessing(height=height, width=width,
                                                                     channels=channels).to_dict(),
                "preset": preset, "kind": kind}
    save_model_atomically(model, path, metadata)
    return Path(path)


BROWSER_ENV = "S3F_EDGE_REQUIRE_BROWSER"  # set by `make test`: a missing browser fails the browser tests
RAY_ENV = "S3F_EDGE_REQUIRE_RAY"  # set by `make test` (which installs Ray): the Ray cluster tests never skip
DCMTK_ENV = "S3F_EDGE_REQUIRE_DCMTK"  # set by `make test` (which installs dcmtk): the DICOM SR checks never skip
DICOM3TOOLS_ENV = "S3F_EDGE_REQUIRE_DICOM3TOOLS"  # the same for dicom3tools' dciodvfy


def browser_missing() -> str | None:
    """Why the review pages cannot be opened in Chromium here (no chromium/chromedriver, no selenium), or None."""
    import shutil

    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return f"{' and '.join(missing)} not found (apt-get install chromium chromium-driver)" if missing else None


def tools_missing(*programs: str, package: str) -> str | None:
    """Why the command-line ``programs`` cannot be run here (naming the Debian ``package``), or None."""
    import shutil

    absent = [name for name in programs if shutil.which(name) is None]
    return f"{' and '.join(absent)} not found (apt-get install {package})" if absent else None


def headless_chromium(width: int = 1400, height: int = 1000):
    """A Selenium driver of the system's headless Chromium that records the console and every network request.

    Returns:
        A ``selenium.webdriver.Chrome``; read ``get_log("browser")`` for the console and ``get_log("performance")``
        for the DevTools network events. Quit it when done.
    """
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def network_requests(driver) -> list[str]:
    """The URLs the page asked for since the last call (DevTools ``Network.requestWillBeSent`` events)."""
    import json

    events = (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
    return [event["params"]["request"]["url"] for event in events if event["method"] == "Network.requestWillBeSent"]


def dicom_from_image(image_path: str | Path, out_path: str | Path, modality: str = "MR", **attributes) -> Path:
    """Write an image (PNG, JPEG, ...) as a DICOM file with its pixels, for tests of DICOM inputs and outputs.

    ``modality="MR"`` makes an MR Image (grayscale; nominal geometry: 1 mm pixels, axial); any other modality a
    Secondary Capture Image with that Modality (colour kept). UIDs derive from the image's bytes, so the same image
    always gives the same study, series and instance. The patient and study are a fixed test identity.

    Args:
        image_path: the image to convert.
        out_path: the DICOM file to write (Explicit VR Little Endian, with file meta).
        modality: the Modality, e.g. "MR", "US", "OT".
        attributes: attributes to set by keyword after the defaults (``PatientName="Müller^Anna"``,
            ``SpecificCharacterSet="ISO_IR 100"``), or to remove (``StudyInstanceUID=None``, ``PixelData=None``).

    Returns:
        ``out_path``.
    """
    import hashlib

    import cv2
    import numpy as np
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage, generate_uid

    data = Path(image_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3 and (modality == "MR" or all((pixels[..., i] == pixels[..., 0]).all() for i in (1, 2))):
        pixels = cv2.cvtColor(pixels[..., :3], cv2.COLOR_BGR2GRAY)
    elif pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels[..., :3], cv2.COLOR_BGR2RGB)
    if modality == "MR":  # MR images are stored in 16 bits
        pixels = pixels.astype(np.uint16)
    sop_class = MRImageStorage if modality == "MR" else SecondaryCaptureImageStorage
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[digest, modality, "instance"])
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[digest, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[digest, modality, "series"])
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Sample^Image", f"S3F{digest[:8]}", "", ""
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20250102", "093000", f"A{digest[:6]}", "1"
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", modality, 1, 1
    ds.Manufacturer, ds.ImageType = "s3f-edge test data", ["DERIVED", "SECONDARY", "OTHER"]
    if modality == "MR":
        ds.PatientPosition, ds.BodyPartExamined = "HFS", "BRAIN"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.SliceThickness = "", "", "", 1
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = generate_uid(entropy_srcs=[digest, "frame"]), ""
        ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 1], [1, 0, 0, 0, 1, 0], [0, 0, 0]
    else:  # unknown orientation and laterality: empty, as type 2C allows
        ds.ConversionType, ds.PatientOrientation, ds.Laterality = "WSD", "", ""
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else 3
    ds.PhotometricInterpretation = "MONOCHROME2" if pixels.ndim == 2 else "RGB"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8 * pixels.dtype.itemsize
    ds.HighBit, ds.PixelRepresentation, ds.PixelData = ds.BitsStored - 1, 0, np.ascontiguousarray(pixels).tobytes()
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(out_path, ds, enforce_file_format=True)  # preamble and complete file meta
    return Path(out_path)
