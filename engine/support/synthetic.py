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

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import tifffile
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import Polygon, box

from engine.io.geojson import write_qupath_geojson
from engine.slides import slide_id_from_path

from .synthetic_scene import (PX_BG, PX_DEBRIS, PX_LUMEN, PX_OBJECT, PX_STROMA, SceneObject, build_scene)

#: Colours (RGB) of the classes, passed to :mod:`engine.io.colors` as overrides.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "duct": (0, 160, 80),
    "nest": (200, 40, 40),
    "large": (40, 80, 220),
    "dcis": (230, 150, 0),
}

# Colours of the rendered pixel classes: base RGB, texture amplitude, noise amplitude.
BACKGROUND_RGB = (255, 255, 255)
_BASE = np.array([BACKGROUND_RGB, (232, 160, 200), (246, 242, 246), (118, 68, 158), (214, 190, 206)], np.float32)
_TEX = np.array([(0, 0, 0), (10, 28, 16), (2, 2, 2), (16, 14, 12), (4, 4, 4)], np.float32)
_NOISE = np.array([0.0, 1.0, 0.4, 1.0, 2.0], np.float32)
#: ``texture="nuclei"``: one nucleus per square cell of this side (µm), somewhere in the cell, in
#: stroma and objects; radius 2.5-4.5 µm; stained this colour; and per-channel grain in tissue.
NUCLEUS_CELL_UM = 16.0
NUCLEUS_RGB = np.array((72, 38, 118), np.float32)
TEXTURES = ("plain", "nuclei")
_SPECKLE_RGB = np.array((128, 84, 150), np.float32)  # nuclear dust in debris (noise value >= 5: 2 in 13)


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
        """Write the truth as QuPath GeoJSON annotations (:func:`engine.io.geojson.write_qupath_geojson`,
        coloured by :data:`CLASS_COLORS`, coordinates rounded to 0.001 px, no CRS)."""
        return write_qupath_geojson(self.truth.sort_values("object_id"), path, "annotation", CLASS_COLORS,
                                    slide_id=self.slide_id, id_source="wsisam-synthetic", ndigits=3)


# --------------------------------------------------------------------------------------------
# Rendering


class _Renderer:
    """Renders tiles of any pyramid level from the object list."""

    def __init__(self, objs: list[SceneObject], tissue: Polygon, mpp: float, seed: int, tile_px: int,
                 texture: str = "plain"):
        self.objs = objs
        self.texture = texture
        self.mpp = mpp
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
            shapes.append((self.tissue, PX_STROMA))
        for i in idx:
            shapes.append((self.objs[i].halo, PX_STROMA))
        for i in idx:
            if self.objs[i].paint is not None:
                shapes.extend(self.objs[i].paint)
                continue
            shapes.append((self.objs[i].full, PX_LUMEN))
            shapes.append((self.objs[i].truth, PX_OBJECT))
        fill = PX_STROMA if in_tissue and shapely.contains(self.tissue, tile_box) else PX_BG
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
        speckle = (cls == PX_DEBRIS) & (noise >= 5)
        if speckle.any():
            img[speckle] = _SPECKLE_RGB + 2.0 * noise[speckle, None]
        if self.texture == "nuclei":
            self._add_nuclei(img, cls, xs, ys, level, row, col)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _add_nuclei(self, img: np.ndarray, cls: np.ndarray, xs: np.ndarray, ys: np.ndarray, level: int, row: int,
                    col: int) -> None:
        """Dark nuclei and colour grain on tissue pixels (``xs``, ``ys``: the tile's pixel centres in
        level-0 px). Each nucleus belongs to a cell of a level-0 grid and is drawn from its cell's
        numbers alone, so every pyramid level shows the same nuclei."""
        cell = NUCLEUS_CELL_UM / self.mpp
        ci, cj = np.floor(xs / cell).astype(np.int64), np.floor(ys / cell).astype(np.int64)
        cells_i, cells_j = np.arange(ci[0] - 1, ci[-1] + 2), np.arange(cj[0] - 1, cj[-1] + 2)
        u = _cell_uniforms(cells_i[None, :], cells_j[:, None], self.seed)  # (3, rows, cols) of cells
        nx, ny = (cells_i[None, :] + 0.15 + 0.7 * u[0]) * cell, (cells_j[:, None] + 0.15 + 0.7 * u[1]) * cell
        r2 = ((2.5 + 2.0 * u[2]) / self.mpp) ** 2
        inside = np.zeros(cls.shape, bool)
        if cell / (xs[1] - xs[0]) >= 8:  # a few nuclei per tile, each over many pixels: one at a time
            for x, y, rr2 in zip(nx.ravel(), ny.ravel(), r2.ravel()):
                r = np.sqrt(rr2)
                k0, k1 = np.searchsorted(xs, x - r), np.searchsorted(xs, x + r, "right")
                l0, l1 = np.searchsorted(ys, y - r), np.searchsorted(ys, y + r, "right")
                if k0 < k1 and l0 < l1:
                    inside[l0:l1, k0:k1] |= (xs[None, k0:k1] - x) ** 2 + (ys[l0:l1, None] - y) ** 2 <= rr2
        else:  # many nuclei per tile: each pixel against its cell's and its neighbours' nuclei
            for di in (0, 1, 2):
                for dj in (0, 1, 2):
                    jj, ii = (cj - cells_j[0] + dj - 1)[:, None], (ci - cells_i[0] + di - 1)[None, :]
                    inside |= (xs[None, :] - nx[jj, ii]) ** 2 + (ys[:, None] - ny[jj, ii]) ** 2 <= r2[jj, ii]
        tissue = ((cls == PX_STROMA) | (cls == PX_OBJECT))[..., None]
        dark = inside[..., None] & tissue
        np.copyto(img, 0.3 * img + 0.7 * NUCLEUS_RGB, where=dark)
        grain = np.random.default_rng([self.seed, level, row, col, 31]).integers(-9, 10, img.shape, dtype=np.int8)
        img += grain * tissue

    def tiles(self, level: int, d: float, w_px: int, h_px: int) -> Iterator[np.ndarray]:
        t = self.tile_px
        for row in range(math.ceil(h_px / t)):
            for col in range(math.ceil(w_px / t)):
                yield self.tile(level, d, row, col)


def _cell_uniforms(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Three numbers in [0, 1) per grid cell (i, j) (broadcast), the same for any tile or level."""
    h = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (j.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    h ^= np.uint64(seed * 0x165667B19E3779F9 % 2**64)
    out = []
    for k in range(3):
        h = (h ^ (h >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(k + 1)
        h ^= h >> np.uint64(29)
        out.append((h >> np.uint64(11)).astype(np.float64) / 2.0**53)
    return np.stack(np.broadcast_arrays(*out))


def _level_dimensions(w: int, h: int, tile_px: int, level_step: int = 2) -> list[tuple[int, int]]:
    """(width, height) per level: level k has width ceil(W / step^k), height ceil(H / d_k)."""
    dims = [(w, h)]
    k = 0
    while max(dims[-1]) > tile_px:
        k += 1
        wk = max(1, math.ceil(w / level_step**k))
        d = w / wk
        dims.append((wk, max(1, math.ceil(h / d - 1e-9))))
    return dims


def synthetic_truth_boxes(width_l0_px: int, height_l0_px: int, mpp: float = 0.5, n_objects: int = 30, seed: int = 0,
                          *, tissue_fraction: float = 0.7, min_gap_um: float = 10.0) -> np.ndarray:
    """The truth boxes (N, 4), level-0 px, that :func:`make_synthetic_slide` with these arguments
    gives, without rendering pixels (scheduler benchmarks on large slides)."""
    _, _, truth = build_scene(int(width_l0_px), int(height_l0_px), mpp, n_objects, seed, None, None, 0, tissue_fraction,
                         min_gap_um)
    return np.asarray(shapely.bounds(truth.geometry.values), dtype=np.float64).reshape(-1, 4)


def nucleus_boxes(side_px: float, n: int, seed: int = 0) -> np.ndarray:
    """(n, 4) boxes, level-0 px, of nucleus size (10-20 px: 5-10 µm at 0.5 µm/px) spread uniformly
    over a ``side_px`` square, as a nucleus detector gives in dense tissue (no pixels)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, side_px, (n, 2))
    return np.hstack([xy, xy + rng.uniform(10, 20, (n, 2))])


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
    level_step: int = 2,
    texture: str = "plain",
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
        tile_px: TIFF tile size (multiple of 16); the pyramid shrinks until a level fits a tile.
        level_step: downsample between pyramid levels: 2 (default), or 4 as Aperio's SVS files
            have (levels 1, 4, 16, ...).
        texture: ``"plain"`` (default: the tissue every test slide has), or ``"nuclei"``: dark nuclei
            in stroma and objects, and colour grain, so JPEG tiles cost what a scan's do to decode.
        compression: ``"jpeg"`` (default, fast), ``"zlib"`` or None.
        slide_id: defaults to the file name without ``.ome.tif`` (or its suffix).
    """
    path = Path(path)
    w, h = int(width_l0_px), int(height_l0_px)
    if tile_px % 16:
        raise ValueError(f"tile_px must be a multiple of 16, got {tile_px}")
    if level_step not in (2, 4):
        raise ValueError(f"level_step must be 2 or 4, got {level_step!r}")
    if texture not in TEXTURES:
        raise ValueError(f"texture must be one of {TEXTURES}, got {texture!r}")
    if slide_id is None:
        slide_id = slide_id_from_path(path)
    objs, tissue, truth = build_scene(w, h, mpp, n_objects, seed, n_large, n_edge, context_objects, tissue_fraction,
                                 min_gap_um)
    dims = _level_dimensions(w, h, tile_px, level_step)
    renderer = _Renderer(objs, tissue, mpp, seed, tile_px, texture)
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
    _add_objective(path, objective_power(mpp))
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


def objective_power(mpp: float) -> float:
    """The objective magnification usually given for a pixel size: 10 µm/px divided by it (20x at
    0.5 µm/px, 40x at 0.25 µm/px), as scanners label their slides."""
    return round(10.0 / mpp, 2)


def _add_objective(path: Path, power: float) -> None:
    """Put an instrument with one objective of ``power`` into the file's OME-XML, referenced by the
    image, so that readers (tiatoolbox, QuPath) find the slide's magnification instead of warning
    that they could not and guessing it from the pixel size. tifffile writes the rest of the
    OME-XML; its ImageDescription is replaced in place."""
    xml = tifffile.tiffcomment(path)
    instrument = (f'<Instrument ID="Instrument:0"><Objective ID="Objective:0" NominalMagnification="{power}"/>'
                  '</Instrument>')
    refs = '<InstrumentRef ID="Instrument:0"/><ObjectiveSettings ID="Objective:0"/>'
    if xml.count('<Image ID="Image:0"') != 1 or xml.count('<Pixels ID="Pixels:0"') != 1:
        raise RuntimeError(f"{path}: unexpected OME-XML from tifffile; cannot add the objective")
    xml = xml.replace('<Image ID="Image:0"', instrument + '<Image ID="Image:0"')
    xml = xml.replace('<Pixels ID="Pixels:0"', refs + '<Pixels ID="Pixels:0"')
    tifffile.tiffcomment(path, xml.encode("utf-8"))
