"""Training samples from slides and polygon annotations, for :mod:`wsisam.training`.

For every annotated object, ``samples_per_object`` (or its class's ``samples_per_class``) concentric HR/LR pairs (``patch_px`` square,
HR at ``hr_mpp``, LR at ``lr_mpp``; default 1.0 / 2.0 µm/px) centred on the object's bounding-box
centre moved by a random jitter of up to ``jitter_fraction`` of the HR field per axis (so the
object is not always centred and big objects are seen cut in many ways), read with
:mod:`engine.slides`, plus the object's ground-truth mask over each patch: its polygon
rasterised in the patch's pixel frame with the pixel-centre rule (holes are background, other
objects are background). A window whose HR patch holds fewer than ``min_object_px`` object
pixels is redrawn (after 20 tries, the window is centred on the object without jitter).

Annotations: QuPath-style GeoJSON or GeoParquet polygons in level-0 px, read by
:func:`engine.io.objects.read_object_polygons` (points, lines and empty geometries are skipped).

Samples of one slide are cached in ``<cache_dir>/<slide_id>-<key>.npz``, the key hashing the slide
file (size, mtime), the annotation file's bytes and the sample configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import torch
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import box

from ..geometry import PatchPair
from ..io.atomic import write_atomic
from ..io.objects import read_object_polygons
from ..slides import Slide, open_slide

CACHE_VERSION = "1"


@dataclass(frozen=True)
class SampleConfig:
    """Which windows to read around each object. ``patch_px`` must be the model's ``img_size``."""

    patch_px: int = 256
    hr_mpp: float = 1.0
    lr_mpp: float = 2.0
    samples_per_object: int = 1
    samples_per_class: tuple[tuple[str, int], ...] = ()  # (class name, samples per object) overrides
    jitter_fraction: float = 0.25  # window centre moves up to ± this share of the HR field per axis
    jitter_in_box: bool = False  # True: or anywhere in the object's bounding box, when that is wider
    min_object_px: int = 16  # least object pixels in the HR patch
    seed: int = 0
    # >= 0: read each object at the pyramid level the engine's scheduler would give it (HR at
    # hr_mpp * 2**level, the smallest level whose HR patch holds the box with this many HR pixels
    # of context), so the model learns what the engine will feed it. -1: always hr_mpp/lr_mpp.
    scheduler_context_px: int = -1

    @property
    def ratio(self) -> float:
        return self.lr_mpp / self.hr_mpp

    def samples_for(self, class_name: str | None) -> int:
        """Windows per object of this class."""
        return dict(self.samples_per_class).get(class_name or "", self.samples_per_object)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SampleSet:
    """N samples. hr / lr (N, S, S, 3) uint8; hr_mask / lr_mask (N, S, S) bool; object_id (N,)
    int64 (the annotation's id); class_name (N,) str; centre_l0_px (N, 2) float64 (the pair's
    centre); slide_id (N,) str; ratio = lr_mpp / hr_mpp of every pair."""

    hr: np.ndarray
    lr: np.ndarray
    hr_mask: np.ndarray
    lr_mask: np.ndarray
    object_id: np.ndarray
    class_name: np.ndarray
    centre_l0_px: np.ndarray
    slide_id: np.ndarray
    ratio: float = 2.0

    def __len__(self) -> int:
        return int(self.hr.shape[0])

    def select(self, index) -> "SampleSet":
        index = np.asarray(index)
        return SampleSet(**{f.name: getattr(self, f.name)[index] if f.name != "ratio" else self.ratio
                            for f in dataclasses.fields(self)})

    @staticmethod
    def concat(sets: list["SampleSet"]) -> "SampleSet":
        if not sets:
            raise ValueError("no sample sets to concatenate")
        ratios = {round(s.ratio, 9) for s in sets}
        if len(ratios) != 1:
            raise ValueError(f"sample sets with different HR/LR ratios: {sorted(ratios)}")
        return SampleSet(**{f.name: sets[0].ratio if f.name == "ratio" else
                            np.concatenate([getattr(s, f.name) for s in sets]) for f in dataclasses.fields(SampleSet)})

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Uncompressed .npz (masks bit-packed), written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n, s = self.hr_mask.shape[:2]
        arrays = dict(hr=self.hr, lr=self.lr, hr_mask=np.packbits(self.hr_mask.reshape(n, -1), axis=1),
                      lr_mask=np.packbits(self.lr_mask.reshape(n, -1), axis=1), object_id=self.object_id,
                      class_name=self.class_name.astype(str), centre_l0_px=self.centre_l0_px,
                      slide_id=self.slide_id.astype(str), ratio=np.float64(self.ratio), side=np.int64(s),
                      version=np.str_(CACHE_VERSION))
        return write_atomic(path, lambda tmp: np.savez(tmp, **arrays))

    @staticmethod
    def load_npz(path: str | os.PathLike) -> "SampleSet":
        with np.load(path, allow_pickle=False) as z:
            s = int(z["side"])
            n = z["hr"].shape[0]

            def unpack(a):
                return np.unpackbits(a, axis=1, count=s * s).reshape(n, s, s).astype(bool)

            return SampleSet(hr=z["hr"], lr=z["lr"], hr_mask=unpack(z["hr_mask"]), lr_mask=unpack(z["lr_mask"]),
                             object_id=z["object_id"], class_name=z["class_name"], centre_l0_px=z["centre_l0_px"],
                             slide_id=z["slide_id"], ratio=float(z["ratio"]))


# --------------------------------------------------------------------------------------------
# Annotations


def read_annotations(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """Object polygons (``object_id``, ``class_name`` or None, ``geometry`` with holes; level-0 px,
    no CRS) of a QuPath-style GeoJSON or GeoParquet file: :func:`engine.io.objects.read_object_polygons`."""
    return read_object_polygons(path, what="annotation")


# --------------------------------------------------------------------------------------------
# Windows and masks


def _patch_transform(origin_l0_px: tuple[float, float], mpp: float, slide_mpp: float) -> Affine:
    f = mpp / slide_mpp
    return Affine(f, 0.0, origin_l0_px[0], 0.0, f, origin_l0_px[1])


def rasterize_in_patch(geom, origin_l0_px: tuple[float, float], patch_px: int, mpp: float,
                       slide_mpp: float) -> np.ndarray:
    """(patch_px, patch_px) bool: pixels of a patch (origin in level-0 px, ``mpp``) whose centre
    lies in ``geom`` (level-0 px); holes are background."""
    f = mpp / slide_mpp
    x, y = origin_l0_px
    clip = geom.intersection(box(x - f, y - f, x + (patch_px + 1) * f, y + (patch_px + 1) * f))
    if clip.is_empty:
        return np.zeros((patch_px, patch_px), bool)
    return rasterize([(clip, 1)], out_shape=(patch_px, patch_px), transform=_patch_transform((x, y), mpp, slide_mpp),
                     fill=0, dtype="uint8").astype(bool)


def pair_masks(geom, pair: PatchPair) -> tuple[np.ndarray, np.ndarray]:
    """The object's ground truth over the pair's HR and LR patches, (S, S) bool each."""
    return (rasterize_in_patch(geom, pair.hr_origin_l0_px, pair.patch_px, pair.hr_mpp, pair.slide_mpp),
            rasterize_in_patch(geom, pair.lr_origin_l0_px, pair.patch_px, pair.lr_mpp, pair.slide_mpp))


def object_level(bounds_l0_px: tuple[float, float, float, float], cfg: SampleConfig, slide_mpp: float) -> int:
    """The pyramid level an object is read at: 0, or the scheduler's level (see SampleConfig)."""
    if cfg.scheduler_context_px < 0:
        return 0
    from ..scheduler import ScheduleConfig, prompt_level

    sched = ScheduleConfig(patch_px=cfg.patch_px, hr_mpp=cfg.hr_mpp, lr_mpp=cfg.lr_mpp,
                           context_px=cfg.scheduler_context_px)
    return prompt_level(bounds_l0_px, sched, slide_mpp)


def object_windows(slide: Slide, geom, cfg: SampleConfig, rng: np.random.Generator, count: int
                   ) -> list[tuple[PatchPair, np.ndarray, np.ndarray]]:
    """``count`` jittered pairs around one object with their masks (fewer when the object has
    under ``min_object_px`` pixels even in a centred window)."""
    x0, y0, x1, y1 = geom.bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = 2 ** object_level(geom.bounds, cfg, slide.mpp)
    hr_mpp, lr_mpp = cfg.hr_mpp * scale, cfg.lr_mpp * scale
    field_l0 = cfg.patch_px * hr_mpp / slide.mpp
    half = np.full(2, cfg.jitter_fraction * field_l0)
    if cfg.jitter_in_box:
        half = np.maximum(half, [(x1 - x0) / 2, (y1 - y0) / 2])
    out = []
    for _ in range(count):
        for attempt in range(21):
            if attempt < 20:
                dx, dy = rng.uniform(-1, 1, 2) * half
            else:
                dx = dy = 0.0
            pair = slide.patch_pair((cx + dx, cy + dy), cfg.patch_px, hr_mpp, lr_mpp)
            hr_m, lr_m = pair_masks(geom, pair)
            if hr_m.sum() >= cfg.min_object_px:
                out.append((pair, hr_m, lr_m))
                break
    return out


def extract_samples(slide: Slide, annotations: gpd.GeoDataFrame, cfg: SampleConfig,
                    progress: bool = False) -> SampleSet:
    """Read the samples of every annotated object of one slide (see the module docstring)."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng([cfg.seed, int(hashlib.sha1(slide.slide_id.encode()).hexdigest()[:8], 16)])
    hr, lr, hm, lm, ids, names, centres = [], [], [], [], [], [], []
    rows = list(annotations.itertuples(index=False))
    for row in tqdm(rows, desc=f"samples {slide.slide_id}", disable=not progress, leave=False):
        for pair, hr_m, lr_m in object_windows(slide, row.geometry, cfg, rng, cfg.samples_for(row.class_name)):
            a, b = slide.read_patch_pair(pair)
            hr.append(a)
            lr.append(b)
            hm.append(hr_m)
            lm.append(lr_m)
            ids.append(int(row.object_id))
            names.append("" if row.class_name is None else str(row.class_name))
            centres.append(pair.centre_l0_px)
    s = cfg.patch_px
    if not hr:
        empty = np.zeros((0, s, s, 3), np.uint8)
        return SampleSet(empty, empty.copy(), np.zeros((0, s, s), bool), np.zeros((0, s, s), bool),
                         np.zeros(0, np.int64), np.zeros(0, str), np.zeros((0, 2)), np.zeros(0, str), cfg.ratio)
    return SampleSet(np.stack(hr), np.stack(lr), np.stack(hm), np.stack(lm), np.asarray(ids, np.int64),
                     np.asarray(names), np.asarray(centres, np.float64), np.full(len(hr), slide.slide_id), cfg.ratio)


def _cache_key(slide_path: Path, annotation_path: Path, cfg: SampleConfig) -> str:
    st = slide_path.stat()
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "slide": slide_path.name, "size": st.st_size,
                         "mtime_ns": st.st_mtime_ns, "cfg": cfg.to_dict()}, sort_keys=True).encode())
    h.update(annotation_path.read_bytes())
    return h.hexdigest()[:16]


def load_samples(slide_path: str | os.PathLike, annotation_path: str | os.PathLike, cfg: SampleConfig,
                 cache_dir: str | os.PathLike | None = None, progress: bool = False) -> SampleSet:
    """Samples of one slide, from the cache when it has them (written there otherwise)."""
    slide_path, annotation_path = Path(slide_path), Path(annotation_path)
    cache = None
    if cache_dir is not None:
        from ..slides import slide_id_from_path

        cache = Path(cache_dir) / f"{slide_id_from_path(slide_path)}-{_cache_key(slide_path, annotation_path, cfg)}.npz"
        if cache.is_file():
            return SampleSet.load_npz(cache)
    with open_slide(slide_path) as slide:
        samples = extract_samples(slide, read_annotations(annotation_path), cfg, progress=progress)
    if cache is not None:
        samples.save_npz(cache)
    return samples


def split_by_object(samples: SampleSet, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices, all samples of one (slide, object) on the same side."""
    keys = np.char.add(np.char.add(samples.slide_id.astype(str), "/"), samples.object_id.astype(str))
    uniq = np.unique(keys)
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(uniq)))
    if val_fraction > 0 and len(uniq) > 1:
        n_val = min(max(n_val, 1), len(uniq) - 1)
    val_keys = set(rng.permutation(uniq)[:n_val].tolist())
    is_val = np.array([k in val_keys for k in keys], bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --------------------------------------------------------------------------------------------
# Data set


class PatchPairDataset(torch.utils.data.Dataset):
    """Items for :class:`wsisam.training.Trainer`: ``hr``, ``lr`` (S, S, 3) uint8, ``hr_mask``,
    ``lr_mask`` (S, S) bool, ``ratio`` (float), ``index`` (int).

    Augmentation (``augment=True``), one draw per item shared by HR and LR so the pair stays
    concentric: flips (``flips="h"``: the reference's horizontal flip; ``"dihedral"``: any of the
    8 flips/rotations) and a colour jitter (brightness, contrast, saturation and per-channel gain,
    each within ±``color_jitter``). Draws are seeded by ``(seed, epoch, index)``: call
    :meth:`set_epoch` (the trainer does) for new draws each epoch.
    """

    def __init__(self, samples: SampleSet, augment: bool = True, flips: Literal["h", "dihedral"] = "dihedral",
                 color_jitter: float = 0.1, seed: int = 0) -> None:
        self.samples = samples
        self.augment = augment
        self.flips = flips
        self.color_jitter = float(color_jitter)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict:
        s = self.samples
        hr, lr, hm, lm = s.hr[i], s.lr[i], s.hr_mask[i], s.lr_mask[i]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            k, flip = (int(rng.integers(4)), bool(rng.integers(2))) if self.flips == "dihedral" else (0, bool(rng.integers(2)))
            hr, lr, hm, lm = (self._geom(a, k, flip) for a in (hr, lr, hm, lm))
            if self.color_jitter > 0:
                params = rng.uniform(-self.color_jitter, self.color_jitter, 6)
                hr, lr = self._color(hr, params), self._color(lr, params)
        return {"hr": torch.from_numpy(np.ascontiguousarray(hr)), "lr": torch.from_numpy(np.ascontiguousarray(lr)),
                "hr_mask": torch.from_numpy(np.ascontiguousarray(hm)), "lr_mask": torch.from_numpy(np.ascontiguousarray(lm)),
                "ratio": torch.tensor(s.ratio, dtype=torch.float32), "index": torch.tensor(int(i))}

    @staticmethod
    def _geom(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
        if flip:
            a = a[:, ::-1]
        return np.rot90(a, k, axes=(0, 1)) if k else a

    @staticmethod
    def _color(img: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Brightness p[0], contrast p[1], saturation p[2], channel gains p[3:6] (relative changes)."""
        x = img.astype(np.float32)
        x = x * (1.0 + p[0])
        mean = x.mean()
        x = (x - mean) * (1.0 + p[1]) + mean
        grey = x.mean(axis=2, keepdims=True)
        x = (x - grey) * (1.0 + p[2]) + grey
        x = x * (1.0 + 0.5 * p[3:6])
        return np.clip(x, 0, 255).astype(np.uint8)
