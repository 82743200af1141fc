"""medheads.models.image_loading: 16-bit and 12-bit-in-16 images keep their real range, DICOM is rescaled, windowed
and inverted as a viewer shows it, and what cannot be read correctly is refused with one error naming the input.
The same loader feeds the shipped image pipeline and the training folder reader (checked in both places)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medheads.data import DataFormatError, read_image_folder
from medheads.models.image_loading import ImageLoadingError, apply_window, load_image

GRADIENT_12BIT = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # 0..4095, every value used


def gray(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    assert image.mode == "RGB" and (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all()
    return array[..., 0].astype(int)


def expected_8bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.rint((values.astype(float) - low) / (high - low) * 255), 0, 255).astype(int)


def png_16bit_rgb(width: int = 4, height: int = 4) -> bytes:
    """A valid 16-bit RGB PNG (PIL cannot write one)."""
    raw = b"".join(b"\x00" + b"\x0f\xff" * 3 * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_12bit_in_16bit_png_keeps_its_range_where_stock_loading_clips_it(tmp_path):
    from transformers.image_utils import load_image as stock_load_image

    path = tmp_path / "xray16.png"
    Image.fromarray(GRADIENT_12BIT).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit PNG
    stock = np.asarray(stock_load_image(str(path)))[..., 0]
    assert (stock == 255).mean() > 0.9  # the bug: 94% of pixels clipped to white
    ours = gray(load_image(str(path)))
    np.testing.assert_array_equal(ours, expected_8bit(GRADIENT_12BIT, 0, 4095))
    assert (ours == 255).mean() < 0.01
    # PIL image, bytes and numpy array of the same data give the same pixels
    np.testing.assert_array_equal(gray(load_image(Image.open(path))), ours)
    np.testing.assert_array_equal(gray(load_image(path.read_bytes())), ours)
    np.testing.assert_array_equal(gray(load_image(GRADIENT_12BIT)), ours)


def test_full_16bit_and_8bit_and_float_inputs(tmp_path):
    full = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    Image.fromarray(full).save(tmp_path / "full.png")
    np.testing.assert_array_equal(gray(load_image(tmp_path / "full.png")), expected_8bit(full, 0, 65535))
    eight = (np.arange(256, dtype=np.uint8).reshape(16, 16))
    Image.fromarray(eight, mode="L").save(tmp_path / "eight.png")
    np.testing.assert_array_equal(gray(load_image(str(tmp_path / "eight.png"))), eight)  # 8-bit: untouched
    np.testing.assert_array_equal(gray(load_image(eight)), eight)
    unit = eight.astype(np.float32) / 255  # float in [0, 1]: intensities
    np.testing.assert_array_equal(gray(load_image(unit)), eight)
    rgb = np.stack([eight, 255 - eight, eight // 2], axis=-1)
    np.testing.assert_array_equal(np.asarray(load_image(rgb)), rgb)
    np.testing.assert_array_equal(np.asarray(load_image(np.moveaxis(rgb, -1, 0))), rgb)  # channels first


def test_16bit_colour_png_is_refused(tmp_path):
    path = tmp_path / "colour16.png"
    path.write_bytes(png_16bit_rgb())
    with pytest.raises(ImageLoadingError, match=r"colour16\.png: a 16-bit RGB PNG cannot be read correctly"):
        load_image(str(path))


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "unreadable or corrupt image"),
    (None, "no such image file"),
])
def test_unreadable_file_gets_one_error_naming_it(tmp_path, content, message):
    path = tmp_path / "broken_scan.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageLoadingError, match=message) as info:
        load_image(str(path))
    assert str(path) in str(info.value)


def test_window_formulas():
    values = np.array([-1000.0, -160.5, -160.0, 40.0, 239.0, 240.0, 1000.0])
    linear = apply_window(values, center=40, width=400)
    # DICOM C.11.2.1.2: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 1; else (x - (c - 0.5)) / (w-1) + 0.5
    expected = [0.0, 0.0, (-160 - 39.5) / 399 + 0.5, (40 - 39.5) / 399 + 0.5, (239 - 39.5) / 399 + 0.5, 1.0, 1.0]
    np.testing.assert_allclose(linear, expected)
    np.testing.assert_allclose(apply_window(values, 40, 400, "LINEAR_EXACT"),
                               np.clip((values - 40) / 400 + 0.5, 0, 1))
    np.testing.assert_allclose(apply_window(values, 40, 400, "SIGMOID"), 1 / (1 + np.exp(-4 * (values - 40) / 400)))


# --------------------------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------------------------


def write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, center=None, width=None, frames: int = 1) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    if frames > 1:
        ds.NumberOfFrames = frames
        stored = np.stack([stored] * frames)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).pixel_array.shape == stored.shape
    return path


def test_dicom_applies_rescale_and_window_and_inverts_monochrome1(tmp_path):
    stored = GRADIENT_12BIT
    hounsfield = stored * 2.0 - 1024.0  # slope 2, intercept -1024: -1024 .. 7166
    expected = np.rint(apply_window(hounsfield, 40, 400) * 255).astype(int)
    assert 0 < (expected == 0).mean() < 1 and 0 < (expected == 255).mean() < 1  # the window really cuts both ends
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1024.0, center=40, width=400)
    np.testing.assert_array_equal(gray(load_image(str(path))), expected)
    inverted = write_dicom(tmp_path / "cr.dcm", stored, photometric="MONOCHROME1", slope=2.0, intercept=-1024.0,
                           center=40, width=400)
    np.testing.assert_array_equal(gray(load_image(str(inverted))), 255 - expected)
    # no window: the rescaled values' own range; DICOM bytes without the extension are recognised by their marker
    plain = write_dicom(tmp_path / "plain.dcm", stored, slope=2.0, intercept=-1024.0)
    np.testing.assert_array_equal(gray(load_image(plain.read_bytes())), expected_8bit(hounsfield, -1024, 7166))


def test_dicom_refusals(tmp_path):
    multi = write_dicom(tmp_path / "cine.dcm", GRADIENT_12BIT[:8, :8], frames=3)
    with pytest.raises(ImageLoadingError, match=r"cine\.dcm: a multi-frame DICOM \(3 frames\)"):
        load_image(str(multi))
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x00" * 300)
    with pytest.raises(ImageLoadingError, match=r"fake\.dcm: not a readable DICOM file"):
        load_image(str(fake))


def test_dicom_without_pydicom_names_the_extra(tmp_path, monkeypatch):
    import sys

    path = write_dicom(tmp_path / "scan.dcm", GRADIENT_12BIT[:8, :8])
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImageLoadingError, match=r"scan\.dcm: reading DICOM needs pydicom: pip install 'medheads\[dicom\]'"):
        load_image(str(path))


# --------------------------------------------------------------------------------------------------------------------
# the training folder reader uses the same loader
# --------------------------------------------------------------------------------------------------------------------


def test_image_folder_reader_reads_16bit_png_and_dicom(tmp_path):
    from medheads.data import load_training_image

    root = tmp_path / "train"
    (root / "normal").mkdir(parents=True)
    (root / "effusion").mkdir()
    Image.fromarray(GRADIENT_12BIT).save(root / "normal" / "a.png")
    write_dicom(root / "effusion" / "b.dcm", GRADIENT_12BIT, slope=2.0, intercept=-1024.0, center=40, width=400)
    paths, names, labels = read_image_folder(root)
    assert names == ["effusion", "normal"] and labels == [0, 1]
    assert [Path(p).name for p in paths] == ["b.dcm", "a.png"]
    np.testing.assert_array_equal(gray(load_training_image(paths[1])), expected_8bit(GRADIENT_12BIT, 0, 4095))
    expected = np.rint(apply_window(GRADIENT_12BIT * 2.0 - 1024, 40, 400) * 255).astype(int)
    np.testing.assert_array_equal(gray(load_training_image(paths[0])), expected)
    (root / "normal" / "c.png").write_bytes(png_16bit_rgb())
    with pytest.raises(DataFormatError, match=r"c\.png: a 16-bit RGB PNG cannot be read correctly"):
        read_image_folder(root)


def test_image_loading_imports_only_what_remote_code_may():
    import ast

    source = Path(__file__).resolve().parents[1] / "medheads" / "models" / "image_loading.py"
    tree = ast.parse(source.read_text())
    top_level = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top_level |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert top_level <= {"__future__", "base64", "io", "os", "pathlib", "numpy"}
    # transformers' check_imports must not require pydicom (or PIL) to load a checkpoint
    from transformers.dynamic_module_utils import get_imports

    assert set(get_imports(source)) <= {"__future__", "base64", "io", "os", "pathlib", "numpy", "urllib"}


def test_training_transform_and_pipeline_see_the_same_pixels(tmp_path):
    """A 16-bit PNG and a DICOM in a training folder reach the model as the shipped pipeline would feed them."""
    import sys

    import torch
    from transformers import pipeline

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import backbone_config, make_image_processor

    from medheads import ViTPatchClassifier, ViTPatchClassifierConfig
    from medheads.training.image_classification import ImageTransform

    Image.fromarray(GRADIENT_12BIT).save(tmp_path / "x16.png")
    paths = [str(tmp_path / "x16.png")]
    if __import__("importlib").util.find_spec("pydicom"):
        paths.append(str(write_dicom(tmp_path / "x.dcm", GRADIENT_12BIT, slope=2.0, intercept=-1024.0, center=40,
                                     width=400)))
    processor = make_image_processor(32)
    model = ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone_config(), head="cls",
                                                        id2label={0: "a", 1: "b"})).eval()
    pipe = pipeline("image-classification", model=model, image_processor=processor)
    training = ImageTransform(processor)({"image": paths, "labels": [0] * len(paths)})["pixel_values"]
    for i, path in enumerate(paths):
        torch.testing.assert_close(training[i], pipe.preprocess(path)["pixel_values"][0], rtol=0, atol=0)
    assert training[0].max() > 0.9 and training[0].min() < -0.9  # the full range (-1..1 after normalisation)
    assert (training[0] > 0.9).float().mean() < 0.1  # not mostly white (the stock reader: 94%)


PNEUMONIA = Path(__import__("os").environ.get("MEDHEADS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "pneumoniamnist" / "pneumoniamnist.npz"


@pytest.mark.skipif(not PNEUMONIA.is_file(), reason=f"PneumoniaMNIST not found at {PNEUMONIA}")
def test_real_xrays_as_12bit_pngs_are_not_clipped():
    """PneumoniaMNIST validation X-rays written as 12-bit-in-16 PNGs (value * 16 + 8): transformers' loader turns
    almost every pixel white; medheads' loader gives back the image (min..max scaled) exactly."""
    from transformers.image_utils import load_image as stock_load_image

    from medheads.models.image_loading import rescale_range, to_uint8

    images = np.load(PNEUMONIA)["val_images"][:100]
    stock_white, ours_white = [], []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint16) * 16 + 8).save(buffer, format="PNG")
        stock = np.asarray(stock_load_image(Image.open(io.BytesIO(buffer.getvalue()))))[..., 0]
        ours = gray(load_image(buffer.getvalue()))
        np.testing.assert_array_equal(ours, to_uint8(rescale_range(image)))
        stock_white.append((stock == 255).mean())
        ours_white.append((ours == 255).mean())
    assert np.mean(stock_white) > 0.9 and np.mean(ours_white) < 0.01
