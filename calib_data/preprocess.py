"""Preprocessing shared by calibration and evaluation.

Calibration statistics are only valid for inputs preprocessed exactly as at inference time, so
one frozen :class:`PreprocessSpec` describes the transform and travels with the engine metadata
(``to_dict`` / ``from_dict``). Applying it to an image returns the tensor and the
:class:`TransformParams` needed to map predicted boxes back to the original image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fx2trt_pipeline.errors import CalibrationError, ConfigError

ResizeMode = Literal["resize", "letterbox"]
Interpolation = Literal["bilinear", "bicubic", "nearest"]
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


@dataclass(frozen=True)
class TransformParams:
    """How one image was resized/padded, to map boxes from network input back to the original.

    ``x_in = x_orig * scale_x + pad_x`` (same for y), in pixel coordinates.
    """

    orig_h: int
    orig_w: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    pad_x: float = 0.0
    pad_y: float = 0.0

    def boxes_to_original(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Map ``(N, 4)`` xyxy boxes from network-input pixels to original-image pixels (clipped).

        Example:
            >>> p = TransformParams(orig_h=10, orig_w=20, scale_x=2.0, scale_y=2.0, pad_y=10.0)
            >>> p.boxes_to_original(torch.tensor([[0.0, 10.0, 8.0, 20.0]])).tolist()
            [[0.0, 0.0, 4.0, 5.0]]
        """
        out = boxes_xyxy.clone().float()
        out[:, 0::2] = ((out[:, 0::2] - self.pad_x) / self.scale_x).clamp(0, self.orig_w)
        out[:, 1::2] = ((out[:, 1::2] - self.pad_y) / self.scale_y).clamp(0, self.orig_h)
        return out


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw ``uint8`` images become network inputs.

    Images are optionally converted between grayscale and RGB (an alpha channel is dropped, as
    ``torchvision.io.decode_image(mode=RGB)`` and PIL's ``convert("RGB")`` do), resized (stretch) or
    letterboxed (aspect kept, padded with ``pad_value``) to ``size``, scaled to ``[0, 1]`` and
    normalized with ``(x - mean) / std`` per channel. With ``resize`` the shorter side is first
    resized to ``resize`` (aspect kept) and the centre ``size`` cropped: torchvision's
    ``Resize(resize)`` + ``CenterCrop(size)`` classification transform (``weights.transforms()``).
    A ``uint8`` image is resized as ``uint8`` by ``torchvision.transforms.v2.functional.resize``, as
    torchvision's transforms resize a decoded image; float images are resized in float.

    Attributes:
        size: ``(H, W)`` of the network input, or ``None`` to keep each image's size.
        mode: ``"resize"`` stretches to ``size``; ``"letterbox"`` keeps the aspect ratio and pads
            centred (the YOLO convention).
        mean: Per-channel mean in ``[0, 1]`` units (one value broadcasts to all channels).
        std: Per-channel std in ``[0, 1]`` units.
        channels: ``None`` keeps the image's channels, ``3`` replicates grayscale to RGB,
            ``1`` converts RGB to grayscale (ITU-R 601 luma).
        channels_first: ``True`` gives ``CHW`` tensors, ``False`` ``HWC``.
        pad_value: Letterbox fill in ``[0, 1]`` units, before normalization.
        resize: Shorter side before the centre crop to ``size`` (``None``: no crop; ``mode`` applies).
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` (torchvision's InterpolationMode).
        antialias: Antialias when downscaling (bilinear/bicubic), as torchvision's transforms do.
        weights: The torchvision weights entry these transforms come from (e.g.
            ``"MobileNet_V2_Weights.IMAGENET1K_V1"``), for the record; ``None`` when none.

    Example:
        >>> spec = PreprocessSpec(size=(224, 224), mean=(0.485, 0.456, 0.406),
        ...                       std=(0.229, 0.224, 0.225), channels=3)
        >>> spec(np.zeros((100, 50), np.uint8)).shape
        torch.Size([3, 224, 224])
    """

    size: tuple[int, int] | None = None
    mode: ResizeMode = "resize"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: int | None = None
    channels_first: bool = True
    pad_value: float = field(default=0.0)
    resize: int | None = None
    interpolation: Interpolation = "bilinear"
    antialias: bool = True
    weights: str | None = None

    def __post_init__(self) -> None:
        # Lists from JSON / user code become tuples so the spec stays hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.size is not None:
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
            if min(self.size) <= 0:
                raise ConfigError(f"PreprocessSpec.size must be positive (H, W), got {self.size}.")
        if self.mode not in ("resize", "letterbox"):
            raise ConfigError(f"PreprocessSpec.mode must be 'resize' or 'letterbox', got {self.mode!r}.")
        if self.resize is not None and (self.size is None or int(self.resize) < max(self.size)):
            raise ConfigError(
                f"PreprocessSpec.resize ({self.resize}) needs a size to crop and must be at least "
                f"its larger side, got size {self.size}."
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"PreprocessSpec.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}."
            )
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"PreprocessSpec.channels must be None, 1 or 3, got {self.channels!r}.")
        if not self.mean or not self.std or any(s <= 0 for s in self.std):
            raise ConfigError(f"PreprocessSpec needs a non-empty mean and a positive std, got {self}.")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict (round-trips through :meth:`from_dict`)."""
        d = asdict(self)
        d["size"] = list(self.size) if self.size is not None else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are an error (typos matter here).

        Example:
            >>> s = PreprocessSpec(size=(64, 64), mode="letterbox")
            >>> PreprocessSpec.from_dict(s.to_dict()) == s
            True
        """
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            valid = sorted(cls.__dataclass_fields__)
            raise ConfigError(f"Unknown PreprocessSpec keys {sorted(unknown)}; valid: {valid}.")
        d = dict(d)
        if d.get("size") is not None:
            d["size"] = tuple(d["size"])
        return cls(**d)

    def describe(self) -> str:
        """One line for people: ``"resize 256, centre crop 224x224, bilinear antialiased, mean [...], std [...]"``.

        Example:
            >>> PreprocessSpec(size=(96, 96), resize=110, channels=3).describe()
            'resize 110, centre crop 96x96, bilinear antialiased, mean [0.0], std [1.0], 3 channels'
        """
        size = "x".join(str(v) for v in self.size) if self.size else ""
        if self.resize is not None:
            shape = f"resize {self.resize}, centre crop {size}"
        elif self.size is None:
            shape = "each image's own size"
        elif self.mode == "letterbox":
            shape = f"letterbox {size} (padded with {self.pad_value})"
        else:
            shape = f"resize to {size}"
        how = f", {self.interpolation}" + (" antialiased" if self.antialias and self.interpolation != "nearest" else "")
        channels = f", {self.channels} channels" if self.channels else ""
        return f"{shape}{how if self.size else ''}, mean {list(self.mean)}, std {list(self.std)}{channels}"

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Preprocess one ``HW`` or ``HWC`` ``uint8`` image; see :meth:`apply`."""
        return self.apply(image)[0]

    def apply(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, TransformParams]:
        """Preprocess one image and return ``(tensor, transform params)``.

        Args:
            image: ``HW`` (grayscale) or ``HWC`` array; ``uint8`` in ``[0, 255]`` (other dtypes are
                taken as already in ``[0, 1]``).

        Returns:
            A float32 ``CHW`` (or ``HWC``) tensor and the :class:`TransformParams` of the resize.

        Example:
            >>> x, p = PreprocessSpec(size=(32, 32), mode="letterbox").apply(np.zeros((16, 32), np.uint8))
            >>> x.shape, p.scale_x, p.pad_y
            (torch.Size([1, 32, 32]), 1.0, 8.0)
        """
        x = torch.as_tensor(np.asarray(image))
        if x.dtype != torch.uint8:
            x = x.float()
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise CalibrationError(f"Expected an HW or HWC image, got shape {tuple(x.shape)}.")
        x = self._convert_channels(x.permute(2, 0, 1))  # work in CHW
        orig_h, orig_w = int(x.shape[1]), int(x.shape[2])
        params = TransformParams(orig_h=orig_h, orig_w=orig_w)
        if self.resize is not None:
            x, params = self._resize_crop(x, orig_h, orig_w)
        elif self.size is not None and (orig_h, orig_w) != self.size:
            x, params = self._resize(x, orig_h, orig_w)
        x = self._normalize(_unit(x))
        return (x if self.channels_first else x.permute(1, 2, 0)).contiguous(), params

    def _convert_channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[0]
        if c == 4:  # RGBA: alpha is dropped, not composited (torchvision's decode_image(mode=RGB) does the same)
            x, c = x[:3], 3
        if self.channels is None or self.channels == c:
            return x
        if self.channels == 3 and c == 1:
            return x.expand(3, -1, -1)
        if self.channels == 1 and c == 3:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
            return (_unit(x) * luma).sum(0, keepdim=True)
        raise CalibrationError(f"Cannot convert a {c}-channel image to {self.channels} channels.")

    def _scaled(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``x`` resized to ``(h, w)`` by torchvision (uint8 stays uint8, as torchvision resizes decoded images)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        mode = InterpolationMode(self.interpolation)
        return TF.resize(x, [h, w], interpolation=mode, antialias=self.antialias)

    def _resize(self, x: torch.Tensor, orig_h: int, orig_w: int) -> tuple[torch.Tensor, TransformParams]:
        h, w = self.size  # type: ignore[misc]
        if self.mode == "resize":
            x = self._scaled(x, h, w)
            return x, TransformParams(orig_h, orig_w, scale_x=w / orig_w, scale_y=h / orig_h)
        scale = min(h / orig_h, w / orig_w)
        new_h, new_w = max(1, round(orig_h * scale)), max(1, round(orig_w * scale))
        x = _unit(self._scaled(x, new_h, new_w))
        pad_y, pad_x = (h - new_h) // 2, (w - new_w) // 2
        out = torch.full((x.shape[0], h, w), float(self.pad_value))
        out[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = x
        return out, TransformParams(
            orig_h, orig_w, scale_x=new_w / orig_w, scale_y=new_h / orig_h, pad_x=float(pad_x), pad_y=float(pad_y)
        )

    def _resize_crop(self, x: torch.Tensor, orig_h: int, orig_w: int) -> tuple[torch.Tensor, TransformParams]:
        # torchvision Resize(int): the shorter side becomes `resize`, the longer int(resize * long / short)
        short, side = min(orig_h, orig_w), int(self.resize or 0)
        new_h = side if orig_h == short else int(side * orig_h / short)
        new_w = side if orig_w == short else int(side * orig_w / short)
        if (new_h, new_w) != (orig_h, orig_w):
            x = self._scaled(x, new_h, new_w)
        h, w = self.size or (new_h, new_w)
        # torchvision CenterCrop: the offset rounds half to even, like Python's round()
        top, left = int(round((new_h - h) / 2.0)), int(round((new_w - w) / 2.0))
        x = x[:, top : top + h, left : left + w]
        return x, TransformParams(
            orig_h, orig_w, scale_x=new_w / orig_w, scale_y=new_h / orig_h, pad_x=float(-left), pad_y=float(-top)
        )

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[0]
        mean, std = self.mean, self.std
        if len(mean) == 1:
            mean = mean * c
        if len(std) == 1:
            std = std * c
        if len(mean) != c or len(std) != c:
            raise CalibrationError(
                f"PreprocessSpec mean/std have {len(self.mean)}/{len(self.std)} values but the image has "
                f"{c} channels; set channels= or give one value per channel."
            )
        return (x - torch.tensor(mean).view(c, 1, 1)) / torch.tensor(std).view(c, 1, 1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``uint8`` pixels as float32 in ``[0, 1]`` (``x / 255``, like ``convert_image_dtype``); float passes through."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a ``uint8`` ``HW`` or ``HWC`` array.

    Raises:
        CalibrationError: the file is missing or not a readable image (names the file).

    Example:
        >>> img = read_image("photo.jpg")  # doctest: +SKIP
    """
    from PIL import Image, UnidentifiedImageError  # Pillow ships with torchvision

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"Image file not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGB")
            return np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CalibrationError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from exc


def image_modes(paths: list[Path]) -> dict[str, list[Path]]:
    """PIL mode (``"L"``, ``"RGB"``, ``"RGBA"``, ...) -> the files in it, read from the headers only.

    Unreadable files are left out (reading them later names them). Example:
        >>> image_modes([])
        {}
    """
    from PIL import Image, UnidentifiedImageError

    modes: dict[str, list[Path]] = {}
    for path in paths:
        try:
            with Image.open(path) as im:
                modes.setdefault(im.mode, []).append(Path(path))
        except (UnidentifiedImageError, OSError, ValueError):
            continue
    return modes
