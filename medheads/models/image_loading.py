"""Read an image the way a radiologist's viewer would, for the image pipeline and the training readers alike.

`load_image(source)` returns an 8-bit RGB `PIL.Image` (what ViT image processors expect, as transformers' own
`load_image` does) from a path, URL, bytes, `PIL.Image`, numpy array or torch tensor:

* 8-bit images (L, RGB, P, RGBA, ...) are converted to RGB exactly as transformers' `load_image` does.
* Deeper grayscale images (16-bit PNG / TIFF, 12 bits stored in 16, 32-bit integer and float images, integer or
  float arrays) keep their real range: values are rescaled linearly from the image's own minimum..maximum to 0..255,
  so a 12-bit X-ray (0..4095) is neither clipped to white (what PIL's 8-bit conversion does) nor darkened. Float
  arrays with every value in [0, 1] are read as intensities in that range.
* DICOM files (`.dcm`, or any file with the `DICM` marker) are read with `pydicom` (`pip install medheads[dicom]`):
  the modality LUT (RescaleSlope / RescaleIntercept) is applied, then the first VOI LUT or window
  (WindowCenter / WindowWidth with VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID) maps values to 0..255; without a
  window the rescaled values' own range is used; MONOCHROME1 (white = low) is inverted.
* What cannot be read correctly is refused with one `ImageLoadingError` naming the file: a 16-bit colour PNG (PIL
  would silently keep only 8 of its bits), multi-frame DICOM, DICOM pixel data without a decoder, a DICOM file when
  pydicom is missing, a corrupt or unknown file.

Shipped with every ViTPatchClassifier checkpoint (remote code): imports numpy, PIL and the standard library; pydicom
only inside a `try` when a DICOM file is read.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np

DICOM_EXTENSIONS = (".dcm", ".dicom")
# PIL modes that hold more than 8 bits per pixel of one grayscale channel.
DEEP_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "I;32", "F")


class ImageLoadingError(ValueError):
    """An image could not be read correctly. The message names the file (or input) and what to do."""


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        return text if len(text) <= 200 else text[:100] + "..." + text[-60:]
    return f"a {type(source).__name__} input"


def load_image(source, timeout: float | None = None, name: str | None = None):
    """An 8-bit RGB `PIL.Image.Image` from `source` (see the module docstring for what is read and how).

    `name` is used in error messages (default: the path, or the input's type).
    """
    name = name or _describe(source)
    image_module = _pil()
    if isinstance(source, image_module.Image):
        return _from_pil(source, name)
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if text.startswith(("http://", "https://")):
            import urllib.request

            try:
                with urllib.request.urlopen(text, timeout=timeout) as response:
                    data = response.read()
            except OSError as error:
                raise ImageLoadingError(f"{name}: could not download the image ({error}).") from None
            return _from_bytes(data, name, dicom_hint=text.lower().split("?")[0].endswith(DICOM_EXTENSIONS))
        if text.startswith("data:image/") and "," in text[:100]:
            return _from_bytes(base64.b64decode(text.split(",", 1)[1]), name)
        path = Path(text)
        if not path.is_file():
            raise ImageLoadingError(f"{name}: no such image file.")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ImageLoadingError(f"{name}: cannot be read ({error.strerror or error}).") from None
        return _from_bytes(data, name, dicom_hint=path.suffix.lower() in DICOM_EXTENSIONS)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), name)
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # a torch tensor
        source = source.detach().cpu().float().numpy() if source.is_floating_point() else source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return from_array(source, name)
    raise ImageLoadingError(
        f"{name}: not an image. Pass a file path or URL, bytes, a PIL image, or a numpy array / torch tensor of "
        "shape (height, width), (height, width, channels) or (channels, height, width)."
    )


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - transformers' image processors need it too
        raise ImageLoadingError("Reading images needs Pillow: pip install pillow.") from None
    return Image


# --------------------------------------------------------------------------------------------------------------------
# intensity scaling
# --------------------------------------------------------------------------------------------------------------------


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> 0..255 (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(unit, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def rescale_range(values: np.ndarray) -> np.ndarray:
    """The image's own minimum..maximum -> [0, 1] (a constant image -> 0). Non-finite values are refused upstream."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _gray_image(unit: np.ndarray):
    return _pil().fromarray(to_uint8(unit), mode="L").convert("RGB")


def from_array(array: np.ndarray, name: str = "array"):
    """An 8-bit RGB image from a numpy array: (H, W), (H, W, 1|3|4) or (1|3, H, W). uint8 values are taken as they
    are; other integer (and bool) arrays and float arrays with values outside [0, 1] are rescaled from their own range;
    float arrays within [0, 1] are read as intensities in [0, 1]."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first -> channels last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ImageLoadingError(
            f"{name}: an array of shape {array.shape} is not an image: expected (height, width), "
            "(height, width, 1|3|4) or (1|3, height, width)."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageLoadingError(f"{name}: an array of dtype {array.dtype} is not an image.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ImageLoadingError(f"{name}: the array holds NaN or infinite values.")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating) and array.min() >= 0 and array.max() <= 1:
        pixels = to_uint8(array)
    else:
        pixels = to_uint8(rescale_range(array))
    image = _pil().fromarray(np.ascontiguousarray(pixels))
    return image.convert("RGB")


# --------------------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------------------


def is_dicom_bytes(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _from_bytes(data: bytes, name: str, dicom_hint: bool = False):
    if is_dicom_bytes(data) or dicom_hint:
        return read_dicom(io.BytesIO(data), name)
    png_header = _png_bit_depth(data)
    if png_header is not None:
        bit_depth, color_type = png_header
        if bit_depth == 16 and color_type != 0:
            kind = {2: "RGB", 4: "grayscale + alpha", 6: "RGBA"}.get(color_type, f"colour type {color_type}")
            raise ImageLoadingError(
                f"{name}: a 16-bit {kind} PNG cannot be read correctly (PIL keeps only 8 of its bits, which darkens "
                "12-bit data): save it as a 16-bit grayscale PNG (X-rays are grayscale) or as 8 bits per channel."
            )
    image_module = _pil()
    try:
        image = image_module.open(io.BytesIO(data))
        _refuse_deep_color(image, name)
        image.load()
    except ImageLoadingError:
        raise
    except Exception as error:  # PIL raises many types for bad files
        raise ImageLoadingError(
            f"{name}: unreadable or corrupt image ({type(error).__name__}: {error}); replace or remove it "
            "(DICOM files need the .dcm extension or the DICM marker)."
        ) from None
    return _from_pil(image, name)


def _png_bit_depth(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None when `data` is not a PNG."""
    if len(data) >= 26 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _refuse_deep_color(image, name: str) -> None:
    """PIL reads 16-bit-per-channel colour images as 8-bit ones (keeping the high byte): refuse them."""
    tile = getattr(image, "tile", None)
    if image.mode in ("RGB", "RGBA", "LA", "RGBX") and tile:
        first = tile[0]
        rawmode = str(getattr(first, "args", None) or (first[3] if len(first) > 3 else ""))
        if "16" in rawmode:
            raise ImageLoadingError(
                f"{name}: a 16-bit-per-channel colour image cannot be read correctly (PIL keeps only 8 of its "
                "bits): save it as 16-bit grayscale or 8 bits per channel."
            )


def _from_pil(image, name: str):
    _refuse_deep_color(image, name)
    try:
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block: keep the image as stored
        pass
    if image.mode in DEEP_GRAY_MODES:
        values = np.asarray(image)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ImageLoadingError(f"{name}: the image holds NaN or infinite values.")
        return _gray_image(rescale_range(values))
    try:
        return image.convert("RGB")
    except Exception as error:
        raise ImageLoadingError(
            f"{name}: PIL image mode {image.mode!r} cannot be converted to RGB ({error})."
        ) from None


# --------------------------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------------------------


def _first(value) -> float:
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        value = value[0]
    return float(value)


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The DICOM VOI window (PS3.3 C.11.2.1.2) mapping `values` to [0, 1]."""
    values = np.asarray(values, dtype=np.float64)
    function = (function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"WindowWidth {width} must be positive")
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"WindowWidth {width} must be positive")
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function != "LINEAR":
        raise ValueError(f"VOILUTFunction {function!r} is not one of LINEAR, LINEAR_EXACT, SIGMOID")
    if width < 1:
        raise ValueError(f"WindowWidth {width} must be at least 1 for LINEAR")
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    out = ((values - (center - 0.5)) / max(width - 1, 1e-12) + 0.5)
    return np.where(values <= low, 0.0, np.where(values > high, 1.0, np.clip(out, 0.0, 1.0)))


def read_dicom(source, name: str = "DICOM file"):
    """An 8-bit RGB image from a DICOM file (path or file object): modality LUT, VOI LUT or window, MONOCHROME1
    inverted. Needs pydicom (`pip install medheads[dicom]`)."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise ImageLoadingError(
            f"{name}: reading DICOM needs pydicom: pip install 'medheads[dicom]' (or pip install pydicom)."
        ) from None
    try:
        dataset = pydicom.dcmread(source)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise ImageLoadingError(f"{name}: not a readable DICOM file ({type(error).__name__}: {error}).") from None
    if "PixelData" not in dataset:
        raise ImageLoadingError(f"{name}: the DICOM file holds no image (no PixelData element).")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageLoadingError(
            f"{name}: a multi-frame DICOM ({frames} frames) is not one image: pass one frame as an array "
            "(pydicom's dataset.pixel_array[i]) or export the frames as separate files."
        )
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # missing decoder plugins raise RuntimeError / NotImplementedError / ValueError
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        raise ImageLoadingError(
            f"{name}: the DICOM pixel data cannot be decoded (transfer syntax "
            f"{getattr(syntax, 'name', syntax)}; {type(error).__name__}: {error}). Compressed DICOM needs a decoder: "
            "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)."
        ) from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim != 2:
            raise ImageLoadingError(f"{name}: a grayscale DICOM image of shape {pixels.shape} is not 2-D.")
        try:
            from pydicom.pixels import apply_modality_lut, apply_voi
        except ImportError:  # pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi
        try:
            values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
            unit = _voi(values, dataset, apply_voi)
        except ImageLoadingError:
            raise
        except Exception as error:
            raise ImageLoadingError(
                f"{name}: the DICOM rescale / window values cannot be applied ({type(error).__name__}: {error})."
            ) from None
        if photometric == "MONOCHROME1":
            unit = 1.0 - unit
        return _gray_image(unit)
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3 and pixels.shape[-1] == 3:
        if photometric != "RGB" and int(pydicom.__version__.split(".")[0]) < 3:  # pydicom 3 converts to RGB itself
            try:
                from pydicom.pixel_data_handlers.util import convert_color_space
                pixels = convert_color_space(pixels, photometric, "RGB")
            except Exception as error:
                raise ImageLoadingError(f"{name}: cannot convert {photometric} to RGB ({error}).") from None
        return from_array(pixels, name)
    raise ImageLoadingError(
        f"{name}: DICOM PhotometricInterpretation {photometric!r} with pixel array shape {pixels.shape} is not "
        "supported (MONOCHROME1, MONOCHROME2 and RGB are)."
    )


def _voi(values: np.ndarray, dataset, apply_voi) -> np.ndarray:
    """Values after the modality LUT -> [0, 1]: the first VOI LUT, else the first window, else their own range."""
    sequence = dataset.get("VOILUTSequence")
    if sequence:
        item = sequence[0]
        bits = int(item.LUTDescriptor[2])
        out = np.asarray(apply_voi(values, dataset, index=0), dtype=np.float64)
        return np.clip(out / float(2 ** bits - 1), 0.0, 1.0)
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is not None and width is not None and str(center).strip() and str(width).strip():
        return apply_window(values, _first(center), _first(width), str(dataset.get("VOILUTFunction", "LINEAR")))
    return rescale_range(values)


__all__ = [
    "ImageLoadingError", "load_image", "from_array", "read_dicom", "apply_window", "rescale_range", "to_uint8",
    "is_dicom_bytes", "DICOM_EXTENSIONS",
]
