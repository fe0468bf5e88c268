"""The preprocessing contract on every kind of file a clinic has."""
import cv2
import numpy as np
import pytest

from s3f_edge.data.preprocess import ImageDecodeError, Preprocessing, decode_image, load_image
from s3f_edge.errors import InputError

GRAY = Preprocessing(height=32, width=48, channels=1)
RGB = Preprocessing(height=32, width=48, channels=3)


def write(path, array):
    assert cv2.imwrite(str(path), array)
    return path


@pytest.fixture
def gradient():
    return np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (40, 1))


def test_gray_jpeg_matches_original_notebook_pixels(sample_images):
    """Same pixels as the original: IMREAD_GRAYSCALE-equivalent, INTER_AREA, /255."""
    path = sample_images[0]
    original = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (48, 32), interpolation=cv2.INTER_AREA)
    ours = load_image(path, GRAY)
    assert ours.shape == (32, 48, 1) and ours.dtype == np.float32
    # JPEG grayscale decoding inside libjpeg may differ from BGR->GRAY by one level.
    assert np.abs(ours[:, :, 0] * 255 - original).max() <= 2


@pytest.mark.parametrize("contract", [GRAY, RGB])
def test_every_channel_layout_converts(tmp_path, gradient, contract):
    bgr = np.dstack([gradient, gradient // 2, 255 - gradient])
    files = {
        "gray.png": gradient,
        "color.png": bgr,
        "alpha.png": np.dstack([bgr, np.full_like(gradient, 128)]),
        "sixteen.png": gradient.astype(np.uint16) * 257,
        "sixteen.tif": gradient.astype(np.uint16) * 257,
        "bitmap.bmp": bgr,
        "photo.jpg": bgr,
    }
    for name, array in files.items():
        out = load_image(write(tmp_path / name, array), contract)
        assert out.shape == contract.input_shape, name
        assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0, name


def test_sixteen_bit_scales_by_its_own_range(tmp_path, gradient):
    eight = load_image(write(tmp_path / "a.png", gradient), GRAY)
    sixteen = load_image(write(tmp_path / "b.png", gradient.astype(np.uint16) * 257), GRAY)
    # INTER_AREA rounds 8-bit results to whole levels: at most half a level (0.5/255) apart.
    np.testing.assert_allclose(eight, sixteen, atol=0.51 / 255)


def test_palette_png(tmp_path):
    from PIL import Image

    image = Image.fromarray(np.arange(64 * 40, dtype=np.uint8).reshape(40, 64) % 7 * 30).convert("P")
    image.save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png", RGB).shape == (32, 48, 3)


def test_unicode_and_spaces_in_path(tmp_path, gradient):
    path = write_via_bytes(tmp_path / "höhe scan 1.png", gradient)
    assert load_image(path, GRAY).shape == (32, 48, 1)


def write_via_bytes(path, array):
    ok, encoded = cv2.imencode(path.suffix, array)
    path.write_bytes(encoded.tobytes())
    return path


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty file"), (b"this is text, not a picture", "not a decodable image")],
)
def test_unreadable_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(path, GRAY)


def test_truncated_png_is_refused(tmp_path, gradient):
    ok, encoded = cv2.imencode(".png", gradient)
    path = tmp_path / "cut.png"
    path.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    with pytest.raises(ImageDecodeError):
        load_image(path, GRAY)


def test_huge_declared_size_is_refused_before_decoding(gradient):
    ok, encoded = cv2.imencode(".png", gradient)
    data = bytearray(encoded.tobytes())
    data[16:24] = (50_000).to_bytes(4, "big") + (50_000).to_bytes(4, "big")  # claims 2.5 gigapixels
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_image(bytes(data))


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read"):
        load_image(tmp_path / "nope.png", GRAY)


def test_contract_round_trips_and_refuses_unknown_versions():
    assert Preprocessing.from_dict(GRAY.to_dict()) == GRAY
    with pytest.raises(InputError, match="Upgrade s3f-edge"):
        Preprocessing.from_dict({**GRAY.to_dict(), "version": 99})
    with pytest.raises(InputError, match="1 \\(grayscale\\) or 3"):
        Preprocessing(height=8, width=8, channels=2)


def write_dicom(path, pixels, photometric="MONOCHROME2", slope=None, intercept=None, window=None, function=None,
                voi_lut=None):
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if function:
        ds.VOILUTFunction = function
    if voi_lut:
        descriptor, table = voi_lut
        item = Dataset()
        item.LUTDescriptor = descriptor
        item.add_new(0x00283006, "US", table)  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


SIZE = Preprocessing(height=8, width=8, channels=1)  # the files' own size: no resampling between values


def dicom_value(tmp_path, raw: float, **tags) -> float:
    """The model pixel that a uniform DICOM image of stored value ``raw`` becomes."""
    image = load_image(write_dicom(tmp_path / f"{len(list(tmp_path.iterdir()))}.dcm", np.full((8, 8), raw), **tags),
                       SIZE)
    assert np.isfinite(image).all() and np.ptp(image) == 0
    return float(image[0, 0, 0])


def test_dicom_without_voi_uses_its_own_range_and_monochrome1_inverts(tmp_path):
    ramp = np.tile(np.arange(0, 4000, 4000 / 64), (40, 1))
    plain = load_image(write_dicom(tmp_path / "a.dcm", ramp), GRAY)
    assert plain.shape == (32, 48, 1) and plain.min() >= 0 and plain.max() <= 1
    assert plain[0, 0, 0] < 0.05 and plain[0, -1, 0] > 0.95  # min-max without a window
    inverted = load_image(write_dicom(tmp_path / "b.dcm", ramp, photometric="MONOCHROME1"), GRAY)
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)


def test_dicom_rescale_then_linear_window_follows_the_standard(tmp_path):
    # PS3.3 C.11.2.1.2.1, c = 1000, w = 1000: x <= c - 0.5 - (w - 1) / 2 -> 0; else ((x - (c - 0.5)) / (w - 1) + 0.5).
    # Slope 2, intercept -1000 turn stored 1000 into x = 1000, stored 750 into x = 500, stored 900 into 800.
    tags = dict(slope=2.0, intercept=-1000.0, window=(1000, 1000))
    assert dicom_value(tmp_path, 1000, **tags) == pytest.approx(0.5 / 999 + 0.5, abs=1e-6)
    assert dicom_value(tmp_path, 750, **tags) == 0.0
    assert dicom_value(tmp_path, 900, **tags) == pytest.approx(0.5 - 199.5 / 999, abs=1e-6)
    assert dicom_value(tmp_path, 2000, **tags) == 1.0
    inverted = dicom_value(tmp_path, 900, photometric="MONOCHROME1", **tags)
    assert inverted == pytest.approx(0.5 + 199.5 / 999, abs=1e-6)


def test_dicom_sigmoid_voi_function(tmp_path):
    # PS3.3 C.11.2.1.3.1: y = 1 / (1 + exp(-4 (x - c) / w)) of the output range.
    tags = dict(window=(1000, 400), function="SIGMOID")
    assert dicom_value(tmp_path, 1000, **tags) == pytest.approx(0.5, abs=1e-6)
    assert dicom_value(tmp_path, 1100, **tags) == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-6)
    assert dicom_value(tmp_path, 800, **tags) == pytest.approx(1 / (1 + np.exp(2.0)), abs=1e-6)


def test_dicom_voi_lut_sequence_wins_over_the_window(tmp_path):
    # 4 entries starting at stored value 100, 8-bit output: values below clamp to the first entry, above to the last.
    tags = dict(voi_lut=([4, 100, 8], [0, 85, 170, 255]), window=(40000, 10))
    for raw, expected in ((50, 0.0), (101, 85 / 255), (102, 170 / 255), (3000, 1.0)):
        assert dicom_value(tmp_path, raw, **tags) == pytest.approx(expected, abs=1e-6)
    assert dicom_value(tmp_path, 102, photometric="MONOCHROME1", **tags) == pytest.approx(1 - 170 / 255, abs=1e-6)


def test_corrupt_dicom_is_an_image_error(tmp_path):
    path = write_dicom(tmp_path / "e.dcm", np.zeros((8, 8)))
    data = path.read_bytes()
    path.write_bytes(data[:200])
    with pytest.raises(ImageDecodeError, match="DICOM"):
        load_image(path, GRAY)
