"""``MaskToBoxesDetector``: box prompts from a coarse segmentation (e.g. an nnU-Net output)."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..records import Prompt
from .base import Detector, SlideLike, components_to_boxes


def load_label_image(path: str | Path) -> np.ndarray:
    """A single-channel integer label/binary image from ``.npy``, ``.tif(f)`` or an image file
    OpenCV reads (PNG, ...). Booleans become 0/1; RGB with equal channels becomes one channel."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError("OpenCV cannot decode it")
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable mask image: {exc}") from None
    return _as_label_image(arr, str(path))


def _as_label_image(arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise ValueError(f"{what}: expected a single-channel label image, got colour {arr.shape}")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D label image, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{what}: label image has non-integer values")
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: unsupported label image dtype {arr.dtype}")
    return arr


class MaskToBoxesDetector(Detector):
    """One box prompt per connected component of each non-zero label value of a coarse mask.

    Args:
        mask: a path (``.npy``, ``.tif``, ``.png``, ...; ``{slide_id}`` in it is replaced by the
            slide's id, for one mask per slide) or an array (H, W).
        mask_mpp: µm per mask pixel; or
        l0_px_per_mask_px: level-0 pixels per mask pixel (the mask's downsample). Give one.
        origin_l0_px: level-0 position of the mask's top-left corner (default the slide's).
        class_names: ``{label value: class name}``; when given, only those values give
            prompts. Otherwise every non-zero value does, with ``class_name = str(value)``.
        instances: True for an instance label image (each value is one object, its box the
            bounds of all its pixels); False (default) for a semantic/binary mask (connected
            components per value).
        min_area_um2: components smaller than this give no prompt.
        connectivity: 4 or 8.

    Prompts are ordered by label value, then by the components' raster order. A mask whose
    level-0 extent differs from the slide's by more than 2 mask pixels and 1 % is warned about
    (usually a wrong mpp/scale).
    """

    name = "mask-to-boxes"

    def __init__(
        self,
        mask: str | Path | np.ndarray,
        mask_mpp: float | None = None,
        l0_px_per_mask_px: float | tuple[float, float] | None = None,
        origin_l0_px: tuple[float, float] = (0.0, 0.0),
        class_names: Mapping[int, str] | None = None,
        instances: bool = False,
        min_area_um2: float = 0.0,
        connectivity: int = 8,
    ) -> None:
        if (mask_mpp is None) == (l0_px_per_mask_px is None):
            raise ValueError("give exactly one of mask_mpp (µm per mask pixel) or l0_px_per_mask_px")
        if mask_mpp is not None and not mask_mpp > 0:
            raise ValueError(f"mask_mpp must be positive, got {mask_mpp}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.mask = mask if isinstance(mask, (str, Path)) else _as_label_image(mask, "mask array")
        self.mask_mpp = None if mask_mpp is None else float(mask_mpp)
        if l0_px_per_mask_px is not None:
            f = np.broadcast_to(np.asarray(l0_px_per_mask_px, dtype=np.float64), (2,))
            if not np.all(f > 0):
                raise ValueError(f"l0_px_per_mask_px must be positive, got {l0_px_per_mask_px}")
            self.l0_px_per_mask_px: tuple[float, float] | None = (float(f[0]), float(f[1]))
        else:
            self.l0_px_per_mask_px = None
        self.origin_l0_px = (float(origin_l0_px[0]), float(origin_l0_px[1]))
        self.class_names = None if class_names is None else {int(k): str(v) for k, v in class_names.items()}
        self.instances = bool(instances)
        self.min_area_um2 = float(min_area_um2)
        self.connectivity = connectivity

    def _load(self, slide: SlideLike) -> np.ndarray:
        if isinstance(self.mask, np.ndarray):
            return self.mask
        return load_label_image(str(self.mask).replace("{slide_id}", str(slide.slide_id)))

    def detect(self, slide: SlideLike) -> list[Prompt]:
        labels = self._load(slide)
        mpp = float(slide.mpp)
        if self.l0_px_per_mask_px is not None:
            fx, fy = self.l0_px_per_mask_px
        else:
            fx = fy = self.mask_mpp / mpp
        W, H = (float(v) for v in slide.dimensions_l0_px)
        ext_w, ext_h = labels.shape[1] * fx, labels.shape[0] * fy
        if self.origin_l0_px == (0.0, 0.0) and (
            abs(ext_w - W) > max(2 * fx, 0.01 * W) or abs(ext_h - H) > max(2 * fy, 0.01 * H)
        ):
            warnings.warn(
                f"mask of {labels.shape[1]} x {labels.shape[0]} px covers {ext_w:.0f} x {ext_h:.0f} level-0 px but "
                f"slide {slide.slide_id!r} is {W:.0f} x {H:.0f}: check mask_mpp / l0_px_per_mask_px",
                stacklevel=2,
            )
        min_area_px = self.min_area_um2 / (fx * fy * mpp * mpp)
        values = [int(v) for v in np.unique(labels) if v != 0]
        if self.class_names is not None:
            values = [v for v in values if v in self.class_names]
        boxes: list[tuple[tuple[float, float, float, float], str]] = []
        if self.instances:
            import scipy.ndimage as ndi

            ox, oy = self.origin_l0_px
            lab = labels.astype(np.int64)
            slices = ndi.find_objects(np.where(np.isin(lab, values), lab, 0)) if values else []
            counts = np.bincount(lab[lab > 0].ravel()) if values else np.zeros(1)
            for v in values:
                sl = slices[v - 1] if v - 1 < len(slices) else None
                if sl is None or counts[v] < min_area_px:
                    continue
                x0, x1 = max(ox + sl[1].start * fx, 0.0), min(ox + sl[1].stop * fx, W)
                y0, y1 = max(oy + sl[0].start * fy, 0.0), min(oy + sl[0].stop * fy, H)
                if x1 > x0 and y1 > y0:
                    boxes.append(((x0, y0, x1, y1), self._class(v)))
        else:
            for v in values:
                for box, _ in components_to_boxes(
                    labels == v, (fx, fy), (W, H), min_area_px, self.origin_l0_px, self.connectivity
                ):
                    boxes.append((box, self._class(v)))
        return [
            Prompt(slide_id=slide.slide_id, prompt_id=i, box_l0_px=box, class_name=cls)
            for i, (box, cls) in enumerate(boxes)
        ]

    def _class(self, value: int) -> str:
        return self.class_names[value] if self.class_names is not None else str(value)
