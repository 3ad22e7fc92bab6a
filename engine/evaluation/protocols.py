"""Evaluation protocols: how prompts are made from ground truth (seeded and documented).

Each protocol turns a slide's truth objects into prompts (:meth:`Protocol.make_prompts`) and
writes them as a prompt file ``<prompts_dir>/<slide_id>.geojson`` that :func:`engine.prompts.read_prompts`
reads back to the same prompts (:meth:`Protocol.write`). Prompts are made per truth object in
``object_id`` order; a prompt made from truth object ``t`` is named ``"truth_id=<t>"`` (and
its features carry ``properties.truth_id = t``), so predictions are matched to truth by prompt.

Randomness: every object draws from its own generator,
``np.random.default_rng(SeedSequence([seed, crc32(slide_id), crc32(str(object_id)), crc32(stream)]))``,
so an object's prompt depends only on (seed, slide, object, protocol) and not on the other
objects or their order.

Protocols (names as the ``experiment`` command takes them):

``boxes``: noisy ground-truth boxes, mimicking an annotator (the paper's box protocol). The noise
    is the reference's training box noise (HQ-SAM's ``box_noise`` with scale 0.2): with the truth
    polygon's bounds ``(x0, y0, x1, y1)``, ``w = x1 - x0``, ``h = y1 - y0``, centre ``(cx, cy)``
    and ``u1..u4 ~ U[-1, 1)`` independent::

        cx' = cx + 0.1 * u1 * w        (centre shift up to ±10 % of the box size)
        cy' = cy + 0.1 * u2 * h
        w'  = w * (1 + 0.2 * u3)       (size change up to ±20 %)
        h'  = h * (1 + 0.2 * u4)

    The box ``(cx' - w'/2, cy' - h'/2, cx' + w'/2, cy' + h'/2)`` is clipped to the slide.
``points3``, ``points5``, ``points10``: K positive points per object, uniform over the object's
    polygon (holes excluded), by rejection sampling in its bounds (candidates drawn in fixed
    batches of 64, so the K = 3 points are the first 3 of the K = 5 ones, and so on: an annotator
    adding clicks). Should an object be too thin to hit in 100 batches, the remaining points are
    its :meth:`representative_point`.
``detector``: boxes from a detector run on a coarse segmentation (:class:`engine.detectors.MaskToBoxesDetector`,
    one box per connected component per class). With a user's coarse mask (e.g. nnU-Net output,
    ``mask`` = path pattern with ``{slide_id}`` and ``mask_mpp``) that mask is used. Otherwise
    (synthetic data) the coarse mask is made from the truth: each object's polygon is grown or
    shrunk by ``d = u * boundary_noise_um`` (``u ~ U[-1, 1)``, per object; buffer in level-0 px)
    and rasterised by pixel centre at ``coarse_mpp`` µm per pixel, value = 1 + the class's index
    among the sorted class names, objects painted in ``object_id`` order. Such boxes are not tied
    to truth objects: predictions are matched by overlap.
"""
from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from ..detectors import MaskToBoxesDetector
from ..io.prompt_files import write_prompts_geojson
from ..protocol_names import PROTOCOL_NAMES
from ..records import Prompt
from .matching import parse_truth_link, truth_link_name

SEEDING = ("per object: np.random.default_rng(SeedSequence([seed, crc32(slide_id), crc32(str(object_id)), "
           "crc32(stream)])), stream = protocol name ('points' for every K)")
BOX_NOISE_MODEL = ("truth bounds (x0,y0,x1,y1), w=x1-x0, h=y1-y0, u1..u4~U[-1,1): cx'=cx+{c}*u1*w, cy'=cy+{c}*u2*h, "
                   "w'=w*(1+{s}*u3), h'=h*(1+{s}*u4); box (cx'-w'/2, cy'-h'/2, cx'+w'/2, cy'+h'/2) clipped to the slide")
_POINT_BATCH = 64
_POINT_ROUNDS = 100


def _crc(s: str) -> int:
    return zlib.crc32(s.encode("utf-8"))


def object_rng(seed: int, slide_id: str, object_id: int, stream: str) -> np.random.Generator:
    """The generator of one object in one protocol (see the module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _crc(slide_id), _crc(str(object_id)), _crc(stream)]))


@dataclass(frozen=True)
class SlideTarget:
    """What a protocol needs of a slide: its id, level-0 size and mpp, and its truth objects."""

    slide_id: str
    width_l0_px: int
    height_l0_px: int
    mpp: float
    truth: gpd.GeoDataFrame  # object_id, class_name, geometry (level-0 px)

    @property
    def dimensions_l0_px(self) -> tuple[int, int]:  # what a detector reads of a slide
        return self.width_l0_px, self.height_l0_px

    def objects(self):
        return self.truth.sort_values("object_id").itertuples(index=False)


@dataclass(frozen=True)
class BoxNoise:
    """Box noise of the reference training code (defaults): centre shift up to ``centre_shift`` x
    the box size, size change up to ``size_change`` x the size, uniform, per axis."""

    centre_shift: float = 0.1
    size_change: float = 0.2

    def apply(self, box_l0_px: tuple[float, float, float, float], rng: np.random.Generator
              ) -> tuple[float, float, float, float]:
        """The noisy box (not clipped); draws 4 uniforms from ``rng``."""
        x0, y0, x1, y1 = box_l0_px
        w, h = x1 - x0, y1 - y0
        u = rng.uniform(-1.0, 1.0, 4)
        cx = (x0 + x1) / 2 + self.centre_shift * u[0] * w
        cy = (y0 + y1) / 2 + self.centre_shift * u[1] * h
        w2 = w * (1 + self.size_change * u[2])
        h2 = h * (1 + self.size_change * u[3])
        return cx - w2 / 2, cy - h2 / 2, cx + w2 / 2, cy + h2 / 2


def clip_box(box: tuple[float, float, float, float], width: float, height: float
             ) -> tuple[float, float, float, float] | None:
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[2], float(width)), min(box[3], float(height))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def sample_points_in_polygon(geom: shapely.Geometry, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` points (k, 2) uniform over ``geom`` (holes excluded), by rejection in its bounds."""
    x0, y0, x1, y1 = geom.bounds
    out: list[np.ndarray] = []
    n = 0
    for _ in range(_POINT_ROUNDS):
        cand = np.column_stack([rng.uniform(x0, x1, _POINT_BATCH), rng.uniform(y0, y1, _POINT_BATCH)])
        keep = cand[shapely.contains_xy(geom, cand[:, 0], cand[:, 1])]
        out.append(keep)
        n += len(keep)
        if n >= k:
            break
    pts = np.concatenate(out)[:k] if out else np.zeros((0, 2))
    if len(pts) < k:
        rp = geom.representative_point()
        pts = np.concatenate([pts, np.tile([rp.x, rp.y], (k - len(pts), 1))])
    return pts


class Protocol(ABC):
    """Makes a slide's prompts from its truth; ``links_truth``: prompts name their truth object."""

    name: str
    links_truth: bool = True

    @abstractmethod
    def make_prompts(self, target: SlideTarget, seed: int) -> list[Prompt]:
        """Prompts with ``prompt_id`` 0..N-1, deterministic in (target, seed)."""

    def describe(self) -> dict:
        """What the protocol is, for ``protocol.json``."""
        return {"name": self.name, "links_truth": self.links_truth, "definition": type(self).__doc__.strip(),
                "seeding": SEEDING}

    def write(self, target: SlideTarget, seed: int, prompts_dir: str | Path) -> Path:
        """Write ``<prompts_dir>/<slide_id>.geojson`` (level-0 px, no CRS); returns its path."""
        d = Path(prompts_dir)
        d.mkdir(parents=True, exist_ok=True)
        return write_linked_prompts(self.make_prompts(target, seed), d / f"{target.slide_id}.geojson")


def write_linked_prompts(prompts: list[Prompt], path: str | Path) -> Path:
    """:func:`engine.io.prompt_files.write_prompts_geojson`, plus ``properties.truth_id`` on linked
    prompts."""

    def truth_id(p: Prompt) -> dict:
        t = parse_truth_link(p.name)
        return {} if t is None else {"truth_id": t}

    return write_prompts_geojson(prompts, path, slide_column=None, extra_properties=truth_id)


class BoxProtocol(Protocol):
    """Noisy ground-truth boxes (see the module docstring for the noise model)."""

    name = "boxes"

    def __init__(self, noise: BoxNoise = BoxNoise()) -> None:
        self.noise = noise

    def describe(self) -> dict:
        return {**super().describe(), "noise": asdict(self.noise),
                "noise_model": BOX_NOISE_MODEL.format(c=self.noise.centre_shift, s=self.noise.size_change)}

    def make_prompts(self, target: SlideTarget, seed: int) -> list[Prompt]:
        prompts: list[Prompt] = []
        for obj in target.objects():
            rng = object_rng(seed, target.slide_id, obj.object_id, self.name)
            box = clip_box(self.noise.apply(obj.geometry.bounds, rng), target.width_l0_px, target.height_l0_px)
            if box is not None:
                prompts.append(Prompt(target.slide_id, len(prompts), box_l0_px=box, class_name=obj.class_name,
                                      name=truth_link_name(obj.object_id)))
        return prompts


class PointsProtocol(Protocol):
    """K positive points per object, uniform inside its polygon (see the module docstring)."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"points per object must be >= 1, got {k}")
        self.k = int(k)
        self.name = f"points{self.k}"

    def describe(self) -> dict:
        return {**super().describe(), "points_per_object": self.k}

    def make_prompts(self, target: SlideTarget, seed: int) -> list[Prompt]:
        prompts: list[Prompt] = []
        for obj in target.objects():
            rng = object_rng(seed, target.slide_id, obj.object_id, "points")  # shared by every K: nested sets
            pts = sample_points_in_polygon(obj.geometry, self.k, rng)
            prompts.append(Prompt(target.slide_id, len(prompts), points_l0_px=tuple(map(tuple, pts.tolist())),
                                  point_labels=(1,) * self.k, class_name=obj.class_name,
                                  name=truth_link_name(obj.object_id)))
        return prompts


class DetectorProtocol(Protocol):
    """Boxes from MaskToBoxesDetector on a coarse segmentation (the user's, or a noisy coarse
    rasterisation of the truth; see the module docstring)."""

    name = "detector"
    links_truth = False

    def __init__(self, coarse_mpp: float = 8.0, boundary_noise_um: float = 8.0, mask: str | None = None,
                 mask_mpp: float | None = None, class_names: dict[int, str] | None = None) -> None:
        if mask is not None and mask_mpp is None:
            raise ValueError("a coarse mask needs its µm per pixel (mask_mpp)")
        if not coarse_mpp > 0 or boundary_noise_um < 0:
            raise ValueError("coarse_mpp must be > 0 and boundary_noise_um >= 0")
        self.coarse_mpp = float(coarse_mpp)
        self.boundary_noise_um = float(boundary_noise_um)
        self.mask = mask
        self.mask_mpp = mask_mpp
        self.class_names = class_names

    def describe(self) -> dict:
        d = super().describe()
        if self.mask is not None:
            return {**d, "mask": self.mask, "mask_mpp": self.mask_mpp, "class_names": self.class_names}
        return {**d, "coarse_mpp": self.coarse_mpp, "boundary_noise_um": self.boundary_noise_um}

    def coarse_mask(self, target: SlideTarget, seed: int) -> tuple[np.ndarray, dict[int, str]]:
        """The synthetic coarse segmentation (uint8/int32 (H, W) at ``coarse_mpp``) and its classes."""
        f = self.coarse_mpp / target.mpp  # level-0 px per mask px
        shape = (max(1, math.ceil(target.height_l0_px / f)), max(1, math.ceil(target.width_l0_px / f)))
        classes = sorted(set(map(str, target.truth.class_name)))
        value = {c: i + 1 for i, c in enumerate(classes)}
        shapes = []
        for obj in target.objects():
            u = object_rng(seed, target.slide_id, obj.object_id, self.name).uniform(-1.0, 1.0)
            g = obj.geometry.buffer(u * self.boundary_noise_um / target.mpp)
            if not g.is_empty:
                shapes.append((g, value[str(obj.class_name)]))
        dtype = "uint8" if len(classes) < 255 else "int32"
        mask = (rasterize(shapes, out_shape=shape, transform=Affine(f, 0, 0, 0, f, 0), dtype=dtype)
                if shapes else np.zeros(shape, dtype=dtype))
        return mask, {v: c for c, v in value.items()}

    def _detector(self, target: SlideTarget, seed: int) -> MaskToBoxesDetector:
        if self.mask is not None:
            return MaskToBoxesDetector(self.mask, mask_mpp=self.mask_mpp, class_names=self.class_names)
        mask, classes = self.coarse_mask(target, seed)
        return MaskToBoxesDetector(mask, mask_mpp=self.coarse_mpp, class_names=classes)

    def make_prompts(self, target: SlideTarget, seed: int) -> list[Prompt]:
        return self._detector(target, seed).detect(target)

    def write(self, target: SlideTarget, seed: int, prompts_dir: str | Path) -> Path:
        path = super().write(target, seed, prompts_dir)
        if self.mask is None:  # keep the synthetic coarse mask next to its prompts
            import cv2

            mask, _ = self.coarse_mask(target, seed)
            if mask.dtype == np.uint8:
                cv2.imwrite(str(path.with_name(f"{target.slide_id}.coarse_mask.png")), mask)
            else:
                np.save(path.with_name(f"{target.slide_id}.coarse_mask.npy"), mask)
        return path


def get_protocol(name: str, noise: BoxNoise = BoxNoise(), **detector_kw) -> Protocol:
    """A protocol by name: ``boxes``, ``points3|5|10`` (any ``points<K>``), ``detector``."""
    if name == "boxes":
        return BoxProtocol(noise)
    if name.startswith("points") and name[6:].isdigit():
        return PointsProtocol(int(name[6:]))
    if name == "detector":
        return DetectorProtocol(**detector_kw)
    raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOL_NAMES)}")
