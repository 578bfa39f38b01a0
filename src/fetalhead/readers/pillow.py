"""PNG, JPEG and the other formats Pillow decodes."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fetalhead.image import MAX_IMAGE_PIXELS, InputError, LoadedImage, check_size, to_uint8_gray


class PillowReader:
    """Any format Pillow can open; colour and palette images become grayscale.

    An EXIF orientation (a phone's photo of the scanner's screen, say) is applied, so
    the network and the overlay see the image the way a viewer shows it, not its
    stored raster turned on its side.
    """

    name = "pillow"

    def recognises(self, data: bytes) -> bool:
        """The catch-all reader: Pillow itself says whether it can decode."""
        return True

    def read(self, data: bytes, name: str) -> list[LoadedImage]:
        """Decode one grayscale frame (no calibration: ordinary images carry none)."""
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            with warnings.catch_warnings():
                # Our own size check below gives the clearer message.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
            with im:
                check_size((im.height, im.width), name)
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                    im = im.convert("RGB")
                arr = np.asarray(im)
        except InputError:
            raise
        except Image.DecompressionBombError as exc:
            raise InputError(f"{name}: image too large ({exc})") from None
        except UnidentifiedImageError:
            raise InputError(f"{name}: not a readable image (PNG, JPEG or DICOM)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{name}: cannot decode image ({exc})") from None
        return [LoadedImage(to_uint8_gray(arr, name=name))]
