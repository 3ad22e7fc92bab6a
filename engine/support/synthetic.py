"""Deterministic synthetic H&E-like whole-slide images with known object polygons.

:func:`make_synthetic_slide` writes a tiled, pyramidal OME-TIFF (pyramid levels as SubIFDs,
OME ``PhysicalSizeX/Y`` in µm plus TIFF resolution tags) that tiatoolbox opens with all levels
and the right mpp (OpenSlide would see only level 0 of a SubIFD pyramid). Everything depends
only on the arguments and ``seed``: same arguments, same pixel bytes and same truth.

Picture: white glass outside the tissue; pink, textured eosin stroma inside it; purple
hematoxylin objects, each in a thin stroma halo (so edge objects sit in tissue too):

- ``duct``: an irregular annulus; its hole is the lumen (near-white), NOT part of the object;
- ``nest``: a solid irregular blob;
- ``large``: a solid blob more than 1024 µm across (bigger than a 1024 px HR window at 1 µm/px);
- ``dcis`` (only with ``context_objects``): a large lobed duct, 300-500 µm across, that needs context
  to be segmented whole. Its outline has bays (concave stretches, so the rim's curvature does not
  say which side is inside). Its wall is a thin purple rim (6-10 µm); its interior is painted exactly
  like the surrounding stroma (same colour, same texture field), with necrosis-like debris
  (pale grey-pink with dark speckles) in an off-centre lumen. The truth is the whole duct
  (wall, interior and debris, no hole), as pathologists annotate DCIS. It is bigger than the
  256 µm HR field of the test-size model at 1 µm/px but fits the 512 µm LR field: a window that
  sees part of it at HR shows arcs of rim around stroma-like tissue, and only the LR patch shows
  which side of the rim is inside.

Objects never overlap (a gap of ``min_gap_um`` at least). A few objects are cut by the slide
edge; their truth polygon is clipped to the slide ``[0, W] x [0, H]``.

Memory stays bounded for any slide size: tiles come from a generator, each tile rasterises only
the objects whose bounds meet it (STRtree query + ``rasterio.features.rasterize`` with the
pixel-centre rule), and each lower pyramid level is rendered directly at its own scale (level
``k`` pixel ``(r, c)`` is the scene sampled at level-0 ``((c+0.5)*d, (r+0.5)*d)``, with
``d = W / W_k``, the downsample tiatoolbox reports).
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import shapely.affinity
import tifffile
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import Polygon, box, mapping

from engine.slides import slide_id_from_path

CLASS_NAMES = ("duct", "nest", "large", "dcis")
#: Classes whose extent is ambiguous in a 256 µm HR field and clear in the 512 µm LR field.
CONTEXT_CLASS_NAMES = ("dcis",)
#: QuPath classification colours (RGB) per class.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "duct": (0, 160, 80),
    "nest": (200, 40, 40),
    "large": (40, 80, 220),
    "dcis": (230, 150, 0),
}

# Rendered pixel classes and their colours: base RGB, texture amplitude, noise amplitude.
_BG, _STROMA, _LUMEN, _OBJECT, _DEBRIS = 0, 1, 2, 3, 4
BACKGROUND_RGB = (255, 255, 255)
_BASE = np.array([BACKGROUND_RGB, (232, 160, 200), (246, 242, 246), (118, 68, 158), (214, 190, 206)], np.float32)
_TEX = np.array([(0, 0, 0), (10, 28, 16), (2, 2, 2), (16, 14, 12), (4, 4, 4)], np.float32)
_NOISE = np.array([0.0, 1.0, 0.4, 1.0, 2.0], np.float32)
_SPECKLE_RGB = np.array((128, 84, 150), np.float32)  # nuclear dust in debris (noise value >= 5: 2 in 13)

# Object sizes in µm.
_DUCT_R_UM = (40.0, 110.0)  # outer mean radius
_LUMEN_FRACTION = (0.4, 0.65)  # lumen radius / outer radius
_NEST_R_UM = (25.0, 80.0)
_LARGE_A_UM = (560.0, 660.0)  # semi-major axis; extent must exceed _LARGE_MIN_EXTENT_UM
_LARGE_MIN_EXTENT_UM = 1024.0
_HALO_UM = 20.0
_DCIS_A_UM = (130.0, 190.0)  # mean radius before the lobes
_DCIS_LOBES = (0.12, 0.25)  # amplitude of the 2- and 3-fold lobes (>= 0.12: concave bays)
_DCIS_EXTENT_UM = (300.0, 500.0)  # across: between the 256 µm HR and the 512 µm LR field
_DCIS_WALL_UM = (6.0, 10.0)
_DCIS_DEBRIS_FRACTION = (0.25, 0.4)  # debris lumen radius / outer radius


@dataclass
class SyntheticSlide:
    """A written synthetic slide and its ground truth.

    ``truth`` has columns ``object_id`` (1..N), ``class_name``, ``geometry`` (shapely Polygon in
    level-0 px, valid, duct lumens kept as holes, no CRS). ``tissue_l0_px`` is the tissue
    region (stroma) outside the objects' halos.
    """

    path: Path
    slide_id: str
    mpp: float
    width_l0_px: int
    height_l0_px: int
    truth: gpd.GeoDataFrame
    level_dimensions_px: list[tuple[int, int]] = field(default_factory=list)
    tissue_l0_px: Polygon | None = None
    seed: int = 0

    def truth_boxes(self) -> np.ndarray:
        """Bounding boxes (N, 4) ``(x0, y0, x1, y1)`` in level-0 px, rows in ``object_id`` order."""
        t = self.truth.sort_values("object_id")
        return np.asarray(shapely.bounds(t.geometry.values), dtype=np.float64).reshape(-1, 4)

    def write_truth(self, path: str | Path) -> Path:
        """Write the truth as QuPath-style GeoJSON (FeatureCollection of annotations, no CRS)."""
        return write_qupath_geojson(self.truth, path, slide_id=self.slide_id)


def write_qupath_geojson(truth: gpd.GeoDataFrame, path: str | Path, slide_id: str = "") -> Path:
    """Write ``truth`` (object_id, class_name, geometry in level-0 px) as QuPath GeoJSON.

    Each object becomes a Feature with a deterministic UUID ``id`` and properties
    ``objectType: "annotation"``, ``classification: {name, color: [r, g, b]}``, ``name`` and
    ``object_id``. No ``crs`` member: coordinates are level-0 pixels, y down.
    """
    path = Path(path)
    features = []
    for row in truth.sort_values("object_id").itertuples(index=False):
        name = str(row.class_name)
        oid = int(row.object_id)
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"wsisam-synthetic/{slide_id}/{oid}")),
                "geometry": _round_coords(mapping(row.geometry)),
                "properties": {
                    "objectType": "annotation",
                    "name": f"{name} {oid}",
                    "classification": {"name": name, "color": list(CLASS_COLORS.get(name, (128, 128, 128)))},
                    "object_id": oid,
                },
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _round_coords(geom: dict, ndigits: int = 3) -> dict:
    def rnd(c):
        if isinstance(c[0], (int, float)):
            return [round(float(v), ndigits) for v in c]
        return [rnd(x) for x in c]

    return {"type": geom["type"], "coordinates": rnd(geom["coordinates"])}


# --------------------------------------------------------------------------------------------
# Shapes


@dataclass
class _Obj:
    class_name: str
    cx: float
    cy: float
    r_max: float  # bounding circle radius, level-0 px
    outer: Polygon  # filled outline, unclipped
    truth: Polygon  # object (with hole for ducts), clipped to the slide
    full: Polygon  # filled outline clipped to the slide (truth + lumen)
    halo: Polygon  # stroma around the object, clipped to the slide
    paint: list[tuple[Polygon, int]] | None = None  # pixel classes inside ``full``; None: lumen + object


def _blob(rng: np.random.Generator, cx: float, cy: float, a: float, b: float, n_vert: int,
          rough: float = 0.07, lobes: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Star-shaped irregular ellipse: returns angles-ordered vertices (n, 2) and radius factors.

    ``lobes`` (range of the 2- and 3-fold harmonics' amplitude) makes a lobed outline with bays
    (concave stretches), as for ``dcis``.
    """
    theta = np.linspace(0.0, 2 * np.pi, n_vert, endpoint=False)
    f = np.ones_like(theta)
    for k in range(2, 6):
        f += rough / k * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if lobes is not None:
        for k in (2, 3):
            f += rng.uniform(*lobes) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rot = rng.uniform(0, np.pi)
    x = a * f * np.cos(theta)
    y = b * f * np.sin(theta)
    xr = cx + x * np.cos(rot) - y * np.sin(rot)
    yr = cy + x * np.sin(rot) + y * np.cos(rot)
    return np.stack([xr, yr], axis=1), f


def _make_shape(rng: np.random.Generator, class_name: str, cx: float, cy: float,
                px_per_um: float) -> tuple[Polygon, Polygon | None, float]:
    """Outline polygon, lumen polygon (ducts) or None, and bounding radius; level-0 px."""
    if class_name == "duct":
        r = rng.uniform(*_DUCT_R_UM) * px_per_um
        a, b = r, r * rng.uniform(0.7, 1.0)
    elif class_name == "nest":
        r = rng.uniform(*_NEST_R_UM) * px_per_um
        a, b = r, r * rng.uniform(0.6, 1.0)
    elif class_name == "large":
        a = rng.uniform(*_LARGE_A_UM) * px_per_um
        b = a * rng.uniform(0.55, 0.8)
    elif class_name == "dcis":
        a = rng.uniform(*_DCIS_A_UM) * px_per_um
        b = a * rng.uniform(0.8, 1.0)
    else:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    n_vert = int(np.clip(2 * np.pi * a / 6.0, 48, 256))
    if class_name == "dcis":  # lobed, 300-500 µm across: past the HR field, inside the LR field
        for _ in range(100):
            pts, f = _blob(rng, cx, cy, a, b, n_vert, lobes=_DCIS_LOBES)
            extent_um = (pts.max(0) - pts.min(0)).max() / px_per_um
            if _DCIS_EXTENT_UM[0] <= extent_um <= _DCIS_EXTENT_UM[1] and Polygon(pts).is_valid:
                break
    else:
        pts, f = _blob(rng, cx, cy, a, b, n_vert)
    outer = Polygon(pts)
    lumen = None
    if class_name == "duct":
        s = rng.uniform(*_LUMEN_FRACTION)
        lumen = shapely.affinity.scale(outer, s, s, origin=(cx, cy))
    elif class_name == "dcis":  # the debris lumen, shifted off the centre
        s = rng.uniform(*_DCIS_DEBRIS_FRACTION)
        ang = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0.0, 0.3) * b
        lumen = shapely.affinity.translate(shapely.affinity.scale(outer, s, s, origin=(cx, cy)),
                                           shift * np.cos(ang), shift * np.sin(ang))
    return outer, lumen, float(a * f.max())


# --------------------------------------------------------------------------------------------
# Layout


def _tissue_polygon(rng: np.random.Generator, w: int, h: int, fraction: float) -> Polygon:
    """Perturbed ellipse centred on the slide, scaled so it covers ``fraction`` of it."""
    slide = box(0, 0, w, h)
    if fraction >= 0.999:
        return slide
    theta = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    f = np.ones_like(theta)
    for k in range(2, 5):
        f += 0.05 / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    unit = np.stack([0.5 * w * f * np.cos(theta), 0.5 * h * f * np.sin(theta)], axis=1)

    def poly(s: float) -> Polygon:
        return Polygon(unit * s + (0.5 * w, 0.5 * h)).intersection(slide)

    lo, hi = 0.0, 1.6
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if poly(mid).area < fraction * w * h:
            lo = mid
        else:
            hi = mid
    return poly(hi)


def _layout(rng: np.random.Generator, w: int, h: int, mpp: float, n_objects: int, n_large: int,
            n_edge: int, tissue: Polygon, min_gap_um: float, max_tries: int = 2000, n_context: int = 0) -> list[_Obj]:
    px_per_um = 1.0 / mpp
    gap = min_gap_um * px_per_um
    halo_px = _HALO_UM * px_per_um
    slide = box(0, 0, w, h)
    n_small = n_objects - n_large - n_edge - n_context
    plan = ["large"] * n_large + ["dcis"] * n_context + ["edge"] * n_edge + [
        "duct" if i % 2 == 0 else "nest" for i in range(n_small)
    ]
    shapely.prepare(tissue)
    tminx, tminy, tmaxx, tmaxy = tissue.bounds
    cxs = np.empty(len(plan))
    cys = np.empty(len(plan))
    rs = np.empty(len(plan))
    objs: list[_Obj] = []
    edge_side = int(rng.integers(4))
    for kind in plan:
        for _ in range(max_tries):
            if kind == "edge":
                class_name = "duct" if edge_side % 2 == 0 else "nest"
                outer, lumen, r = _make_shape(rng, class_name, 0.0, 0.0, px_per_um)
                side = edge_side % 4
                length = w if side in (0, 2) else h
                if length <= 2 * r:
                    continue
                t = rng.uniform(r, length - r)
                off = rng.uniform(-0.5, 0.4) * r  # centre outside (<0) or inside the edge
                cx, cy = {0: (t, off), 1: (w - off, t), 2: (t, h - off), 3: (off, t)}[side]
                outer = shapely.affinity.translate(outer, cx, cy)
                lumen = None if lumen is None else shapely.affinity.translate(lumen, cx, cy)
            else:
                class_name = kind
                cx = rng.uniform(tminx, tmaxx)
                cy = rng.uniform(tminy, tmaxy)
                if not shapely.contains_xy(tissue, cx, cy):
                    continue
                outer, lumen, r = _make_shape(rng, class_name, cx, cy, px_per_um)
                if cx - r < 0 or cy - r < 0 or cx + r > w or cy + r > h:
                    continue
                if class_name == "large":
                    x0, y0, x1, y1 = outer.bounds
                    if max(x1 - x0, y1 - y0) * mpp <= _LARGE_MIN_EXTENT_UM:
                        continue
            k = len(objs)
            if k and np.any(np.hypot(cxs[:k] - cx, cys[:k] - cy) < rs[:k] + r + gap):
                continue
            full = outer.intersection(slide)
            obj_geom = outer if lumen is None or class_name == "dcis" else outer.difference(lumen)
            truth = obj_geom.intersection(slide)
            if not (isinstance(truth, Polygon) and isinstance(full, Polygon) and truth.is_valid):
                continue
            if truth.area < 0.25 * obj_geom.area:
                continue
            halo = outer.buffer(halo_px + 0.2 * r, quad_segs=4).intersection(slide)
            paint = None
            if class_name == "dcis":
                wall_px = rng.uniform(*_DCIS_WALL_UM) * px_per_um
                inner = outer.buffer(-wall_px)
                debris = lumen.intersection(outer.buffer(-wall_px - 10.0 * px_per_um)).intersection(slide)
                paint = [(full, _STROMA), (full.difference(inner), _OBJECT), (debris, _DEBRIS)]
            cxs[k], cys[k], rs[k] = cx, cy, r
            objs.append(_Obj(class_name, cx, cy, r, outer, truth, full, halo, paint))
            if kind == "edge":
                edge_side += 1
            break
        else:
            raise ValueError(
                f"could not place {len(plan)} objects ({n_large} large, {n_edge} at the edge) without "
                f"overlap on a {w} x {h} px slide at {mpp} µm/px with tissue_fraction covering "
                f"{tissue.area / (w * h):.2f}: placed {len(objs)}; use a bigger slide or fewer objects"
            )
    return objs


# --------------------------------------------------------------------------------------------
# Rendering


class _Renderer:
    """Renders tiles of any pyramid level from the object list."""

    def __init__(self, objs: list[_Obj], tissue: Polygon, mpp: float, seed: int, tile_px: int):
        self.objs = objs
        self.tissue = tissue
        shapely.prepare(tissue)
        self.tree = shapely.STRtree([o.halo for o in objs]) if objs else None
        self.seed = seed
        self.tile_px = tile_px
        srng = np.random.default_rng([seed, 7919])
        # Texture: three plane waves, wavelengths in µm -> level-0 px.
        self.waves = []
        for lam_um, amp in ((55.0, 0.5), (23.0, 0.3), (110.0, 0.2)):
            ang = srng.uniform(0, np.pi)
            k = 2 * np.pi / (lam_um / mpp)
            self.waves.append((k * np.cos(ang), k * np.sin(ang), srng.uniform(0, 2 * np.pi), amp))
        self._blank = np.full((tile_px, tile_px, 3), BACKGROUND_RGB, np.uint8)

    def tile(self, level: int, d: float, row: int, col: int) -> np.ndarray:
        """Tile (tile_px, tile_px, 3) uint8 at level-pixel offset (row, col) * tile_px."""
        t = self.tile_px
        r0, c0 = row * t, col * t
        tile_box = box(c0 * d, r0 * d, (c0 + t) * d, (r0 + t) * d)
        idx = [] if self.tree is None else sorted(self.tree.query(tile_box).tolist())
        in_tissue = shapely.intersects(self.tissue, tile_box)
        if not idx and not in_tissue:
            return self._blank
        transform = Affine(d, 0.0, c0 * d, 0.0, d, r0 * d)
        shapes = []
        if in_tissue and not shapely.contains(self.tissue, tile_box):
            shapes.append((self.tissue, _STROMA))
        for i in idx:
            shapes.append((self.objs[i].halo, _STROMA))
        for i in idx:
            if self.objs[i].paint is not None:
                shapes.extend(self.objs[i].paint)
                continue
            shapes.append((self.objs[i].full, _LUMEN))
            shapes.append((self.objs[i].truth, _OBJECT))
        fill = _STROMA if in_tissue and shapely.contains(self.tissue, tile_box) else _BG
        cls = rasterize(shapes, out_shape=(t, t), transform=transform, fill=fill, dtype="uint8")
        # texture at pixel centres, level-0 coordinates; separable plane waves
        xs = ((c0 + np.arange(t) + 0.5) * d).astype(np.float64)
        ys = ((r0 + np.arange(t) + 0.5) * d).astype(np.float64)
        tex = np.zeros((t, t), np.float32)
        for kx, ky, ph, amp in self.waves:
            ax = kx * xs + ph
            by = ky * ys
            tex += amp * (np.outer(np.cos(by), np.sin(ax)) + np.outer(np.sin(by), np.cos(ax))).astype(np.float32)
        noise = np.random.default_rng([self.seed, level, row, col]).integers(-6, 7, (t, t)).astype(np.float32)
        img = _BASE[cls] + _TEX[cls] * tex[..., None] + (_NOISE[cls] * noise)[..., None]
        speckle = (cls == _DEBRIS) & (noise >= 5)
        if speckle.any():
            img[speckle] = _SPECKLE_RGB + 2.0 * noise[speckle, None]
        return np.clip(img, 0, 255).astype(np.uint8)

    def tiles(self, level: int, d: float, w_px: int, h_px: int) -> Iterator[np.ndarray]:
        t = self.tile_px
        for row in range(math.ceil(h_px / t)):
            for col in range(math.ceil(w_px / t)):
                yield self.tile(level, d, row, col)


def _level_dimensions(w: int, h: int, tile_px: int) -> list[tuple[int, int]]:
    """(width, height) per level: level k has width ceil(W / 2^k), height ceil(H / d_k)."""
    dims = [(w, h)]
    k = 0
    while max(dims[-1]) > tile_px:
        k += 1
        wk = max(1, math.ceil(w / 2**k))
        d = w / wk
        dims.append((wk, max(1, math.ceil(h / d - 1e-9))))
    return dims


def _scene(w: int, h: int, mpp: float, n_objects: int, seed: int, n_large: int | None, n_edge: int | None,
           context_objects: int, tissue_fraction: float, min_gap_um: float):
    """Objects, tissue polygon and truth table of a slide (everything but the pixels)."""
    if w < 16 or h < 16:
        raise ValueError(f"slide too small: {w} x {h} px")
    rng = np.random.default_rng(seed)
    tissue = _tissue_polygon(rng, w, h, float(tissue_fraction))
    tissue_um2 = tissue.area * mpp * mpp
    if n_large is None:
        n_large = min(3, int(tissue_um2 // 2.5e6))
    if n_edge is None:
        n_edge = min(4, n_objects // 5)
    n_large = min(n_large, n_objects)
    n_context = min(int(context_objects), n_objects - n_large)
    n_edge = min(n_edge, n_objects - n_large - n_context)
    objs = _layout(rng, w, h, mpp, n_objects, n_large, n_edge, tissue, min_gap_um, n_context=n_context)
    truth = gpd.GeoDataFrame(
        {
            "object_id": np.arange(1, len(objs) + 1, dtype=np.int64),
            "class_name": [o.class_name for o in objs],
        },
        geometry=[o.truth for o in objs],
        crs=None,
    )
    return objs, tissue, truth


def synthetic_truth_boxes(width_l0_px: int, height_l0_px: int, mpp: float = 0.5, n_objects: int = 30, seed: int = 0,
                          *, tissue_fraction: float = 0.7, min_gap_um: float = 10.0) -> np.ndarray:
    """The truth boxes (N, 4), level-0 px, that :func:`make_synthetic_slide` with these arguments
    gives, without rendering pixels (scheduler benchmarks on large slides)."""
    _, _, truth = _scene(int(width_l0_px), int(height_l0_px), mpp, n_objects, seed, None, None, 0, tissue_fraction,
                         min_gap_um)
    return np.asarray(shapely.bounds(truth.geometry.values), dtype=np.float64).reshape(-1, 4)


def make_synthetic_slide(
    path: str | Path,
    width_l0_px: int,
    height_l0_px: int,
    mpp: float = 0.5,
    n_objects: int = 30,
    seed: int = 0,
    *,
    n_large: int | None = None,
    n_edge: int | None = None,
    context_objects: int = 0,
    tissue_fraction: float = 0.7,
    min_gap_um: float = 10.0,
    tile_px: int = 512,
    compression: str | None = "jpeg",
    jpeg_quality: int = 90,
    slide_id: str | None = None,
) -> SyntheticSlide:
    """Write a pyramidal OME-TIFF of a synthetic H&E slide and return it with its truth.

    Args:
        path: output file; use a ``.ome.tif`` name (tiatoolbox picks its reader by suffix).
        width_l0_px, height_l0_px: level-0 size in pixels.
        mpp: level-0 µm per pixel.
        n_objects: total number of objects (large and edge ones included).
        seed: everything (layout, texture, noise) derives from it.
        n_large: objects > 1024 µm across; default: one per 2.5 mm² of tissue, at most 3.
        n_edge: objects cut by the slide edge; default ``min(4, n_objects // 5)``.
        context_objects: ``dcis`` objects (see the module docstring), counted in ``n_objects``
            and placed after the large ones; 0 (default) leaves the slide as it always was.
        tissue_fraction: share of the slide covered by the tissue ellipse (1: all of it).
        min_gap_um: least distance between objects' bounding circles.
        tile_px: TIFF tile size (multiple of 16); the pyramid halves until a level fits a tile.
        compression: ``"jpeg"`` (default, fast), ``"zlib"`` or None.
        slide_id: defaults to the file name without ``.ome.tif`` (or its suffix).
    """
    path = Path(path)
    w, h = int(width_l0_px), int(height_l0_px)
    if tile_px % 16:
        raise ValueError(f"tile_px must be a multiple of 16, got {tile_px}")
    if slide_id is None:
        slide_id = slide_id_from_path(path)
    objs, tissue, truth = _scene(w, h, mpp, n_objects, seed, n_large, n_edge, context_objects, tissue_fraction,
                                 min_gap_um)
    dims = _level_dimensions(w, h, tile_px)
    renderer = _Renderer(objs, tissue, mpp, seed, tile_px)
    comp: dict = {}
    if compression == "jpeg":
        comp = {"compression": "jpeg", "compressionargs": {"level": int(jpeg_quality)}}
    elif compression == "zlib":
        comp = {"compression": "zlib", "compressionargs": {"level": 6}}
    elif compression is not None:
        raise ValueError(f"compression must be 'jpeg', 'zlib' or None, got {compression!r}")
    px_per_cm = 1e4 / mpp
    bigtiff = w * h * 3 > 2**31
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, bigtiff=bigtiff, ome=True) as tif:
        for level, (wk, hk) in enumerate(dims):
            d = w / wk
            kwargs = dict(
                shape=(hk, wk, 3),
                dtype=np.uint8,
                tile=(tile_px, tile_px),
                photometric="rgb",
                resolution=(px_per_cm / d, px_per_cm / d),
                resolutionunit="CENTIMETER",
                buffersize=32 * 2**20,
                **comp,
            )
            if level == 0:
                kwargs["subifds"] = len(dims) - 1
                kwargs["metadata"] = {
                    "axes": "YXS",
                    "Name": slide_id,
                    "PhysicalSizeX": mpp,
                    "PhysicalSizeXUnit": "µm",
                    "PhysicalSizeY": mpp,
                    "PhysicalSizeYUnit": "µm",
                }
            else:
                kwargs["subfiletype"] = 1
            tif.write(renderer.tiles(level, d, wk, hk), **kwargs)
    return SyntheticSlide(
        path=path,
        slide_id=slide_id,
        mpp=float(mpp),
        width_l0_px=w,
        height_l0_px=h,
        truth=truth,
        level_dimensions_px=dims,
        tissue_l0_px=tissue,
        seed=seed,
    )
