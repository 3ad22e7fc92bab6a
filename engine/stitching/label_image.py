"""Slide-level label image: ObjectMask records -> one uint32 ``labels.ome.zarr`` per slide.

Usage::

    with LabelImageWriter(path, slide_width_l0_px=W, slide_height_l0_px=H, slide_mpp=0.25,
                          label_mpp=1.0) as writer:
        for obj in objects:          # any order
            writer.add(obj)
    # leaving the block calls close(): pyramid + OME-NGFF metadata, then the folder appears

Each object's crop (at ``obj.mask_mpp``, top-left at ``obj.origin_l0_px``) is resampled onto
the label grid (``label_mpp`` µm per pixel) by nearest neighbour (see ``grid``), and painted
with id ``obj.object_id`` (``prompt_id + 1``).

Overlap rule: where objects overlap, the pixel goes to the object with the higher score; ties
go to the lower object id. The result is the same whatever the arrival order (see ``overlap``).

Memory: the image is written chunk by chunk (read-modify-write of only the chunks an object
touches; :meth:`LabelImageWriter.add_many` paints a batch with one read-modify-write per touched
chunk); no whole-slide array is ever held. In memory: the chunks painted lately (at most
``max_cached_chunks``, written when evicted and at :meth:`~LabelImageWriter.flush`), the set of
touched chunk indices, and a small table object_id -> (prompt_id, score, class, pixel count).
``close()`` builds the pyramid chunk-wise (``pyramid``) and writes the metadata (``ngff``).

Atomicity: everything is written into ``<path>.partial`` and renamed to ``<path>`` by
``close()``; ``abort()`` (or an exception inside the ``with`` block) removes it. One writer per
slide: two processes painting the same chunk would race.
"""
from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from engine.records import ObjectMask
from engine.io.colors import RGB, class_color_rgb
from engine.stitching.grid import LabelGrid, Window
from engine.stitching.ngff import NgffArrays, NgffVersion, create_arrays, ngff_format, write_metadata
from engine.stitching.overlap import ObjectEntry, check_score, paint
from engine.stitching.polygons import Polygonal, label_block_polygons, label_px_to_l0_px, union_parts
from engine.stitching.pyramid import ChunkIndex, build_pyramid, chunk_window, default_n_levels, level_shapes

_MAX_ID = np.iinfo(np.uint32).max


class LabelImageWriter:
    """Writes one slide's object label image as an OME-NGFF multiscale label pyramid.

    Args:
        path: output folder, conventionally ``.../labels.ome.zarr``.
        slide_width_l0_px, slide_height_l0_px: slide level-0 size (as tiatoolbox opens it).
        slide_mpp: µm per level-0 pixel.
        label_mpp: µm per label pixel (e.g. 1.0, the HR resolution); grid shape is
            ``ceil(slide_size_l0_px * slide_mpp / label_mpp)``.
        slide_id: if given, records of other slides are refused.
        chunk_px: square chunk edge of every level.
        n_levels: pyramid levels; default: until the coarsest fits one chunk.
        ngff_version: "0.5" (zarr v3, default) or "0.4" (zarr v2, for QuPath / tiatoolbox).
        label_name: name of the label image under ``labels/``.
        class_colors_rgb: class name -> (r, g, b); other classes get stable palette colours.
        overwrite: replace an existing ``path`` on close (else FileExistsError at creation).
        max_cached_chunks: level-0 chunks kept in memory between batches (16 x 4 MiB at 1024 px).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        slide_width_l0_px: int,
        slide_height_l0_px: int,
        slide_mpp: float,
        label_mpp: float = 1.0,
        slide_id: str | None = None,
        chunk_px: int = 1024,
        n_levels: int | None = None,
        ngff_version: NgffVersion = "0.5",
        label_name: str = "objects",
        class_colors_rgb: Mapping[str, RGB] | None = None,
        overwrite: bool = False,
        max_cached_chunks: int = 16,
    ) -> None:
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists (pass overwrite=True to replace it)")
        self.grid = LabelGrid(slide_width_l0_px, slide_height_l0_px, slide_mpp, label_mpp)
        self.slide_id = slide_id
        self.chunk_px = int(chunk_px)
        self.fmt = ngff_format(ngff_version)
        self.label_name = label_name
        self.class_colors_rgb = dict(class_colors_rgb or {})
        self.n_levels = n_levels or default_n_levels(self.grid.shape_px, self.chunk_px)
        self.shapes_px = level_shapes(self.grid.shape_px, self.n_levels)
        self.entries: dict[int, ObjectEntry] = {}
        self._touched: set[ChunkIndex] = set()  # level-0 chunks holding data
        # Level-0 chunks painted lately, kept in memory and written when evicted or at flush():
        # neighbouring batches paint the same chunks, and each write re-encodes the whole chunk.
        self.max_cached_chunks = int(max_cached_chunks)
        self._cache: OrderedDict[ChunkIndex, np.ndarray] = OrderedDict()
        self._dirty: set[ChunkIndex] = set()
        self._closed = False
        if self.partial_path.exists():
            shutil.rmtree(self.partial_path)
        self._arrays: NgffArrays = create_arrays(
            str(self.partial_path), self.fmt, self.shapes_px, self.chunk_px, label_name
        )

    # ------------------------------------------------------------------ painting
    def add(self, obj: ObjectMask) -> int:
        """Paint one object; returns the label pixels it took (0 if it lost everywhere).

        Raises ValueError for another slide's record, a repeated object id, a non-finite score
        or a mask that is not 2-D.
        """
        return self.add_many([obj])[0]

    def add_many(self, objects: Sequence[ObjectMask]) -> list[int]:
        """Paint a batch of objects with one read-modify-write per touched chunk (not one per
        object and chunk); returns the label pixels each took. The result is the same as adding
        them one by one, in any order (the overlap rule does not depend on order). Every record
        is checked (as :meth:`add` does) before any is painted."""
        if self._closed:
            raise RuntimeError("writer is closed")
        entries = self._register(objects)
        plan: dict[ChunkIndex, list[tuple[int, Window]]] = {}
        for k, obj in enumerate(objects):
            win = self.grid.object_window(obj)
            for index, part in ([] if win is None else self._chunk_parts(win)):
                plan.setdefault(index, []).append((k, part))
        won = [0] * len(objects)
        shape = self._arrays.label_levels[0].shape
        for index in sorted(plan):
            rows, cols = chunk_window(index, self.chunk_px, shape)
            block, changed = None, False
            for k, part in plan[index]:
                new_mask = self.grid.sample(objects[k], part)
                n_raw = int(np.count_nonzero(new_mask))
                if n_raw == 0:
                    continue
                entries[k].n_px_raw += n_raw
                if block is None:
                    block = self._chunk(index)
                view = block[part.r0 - rows.start:part.r1 - rows.start, part.c0 - cols.start:part.c1 - cols.start]
                n, lost = paint(view, new_mask, entries[k], self.entries)
                if n == 0:
                    continue
                changed = True
                won[k] += n
                entries[k].n_px += n
                for other, m in lost.items():
                    self.entries[other].n_px -= m
            if changed:
                self._dirty.add(index)
                self._touched.add(index)
        return won

    def _chunk(self, index: ChunkIndex) -> np.ndarray:
        """Level-0 chunk ``index`` from the cache, else read (evicting the least recently used)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        level0 = self._arrays.label_levels[0]
        rows, cols = chunk_window(index, self.chunk_px, level0.shape)
        if index in self._touched:  # written when evicted earlier
            block = np.array(level0[rows, cols])
        else:  # never painted: nothing on disk to read
            block = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=level0.dtype)
        self._cache[index] = block
        while len(self._cache) > max(1, self.max_cached_chunks):
            self._write_chunk(*self._cache.popitem(last=False))
        return block

    def _write_chunk(self, index: ChunkIndex, block: np.ndarray) -> None:
        if index in self._dirty:
            self._dirty.discard(index)
            rows, cols = chunk_window(index, self.chunk_px, self._arrays.label_levels[0].shape)
            self._arrays.label_levels[0][rows, cols] = block

    def flush(self) -> None:
        """Write the cached chunks that were painted (:meth:`close` writes them too)."""
        while self._cache:
            self._write_chunk(*self._cache.popitem(last=False))

    def _register(self, objects: Sequence[ObjectMask]) -> list[ObjectEntry]:
        """Check every record, then enter them all in the object table (none if one is refused)."""
        entries: list[ObjectEntry] = []
        seen: set[int] = set()
        for obj in objects:
            if self.slide_id is not None and obj.slide_id != self.slide_id:
                raise ValueError(f"object of slide {obj.slide_id!r} given to writer of {self.slide_id!r}")
            oid = int(obj.object_id)
            if not 0 < oid <= _MAX_ID:
                raise ValueError(f"object id {oid} does not fit a uint32 label")
            if oid in self.entries or oid in seen:
                raise ValueError(f"object id {oid} was already added")
            if np.ndim(obj.mask) != 2:
                raise ValueError(f"mask must be 2-D (h, w), got shape {np.shape(obj.mask)}")
            seen.add(oid)
            entries.append(ObjectEntry(oid, int(obj.prompt_id), check_score(obj.score), obj.class_name,
                                       truncated=bool(obj.extra.get("truncated", False))))
        self.entries.update((e.object_id, e) for e in entries)
        return entries

    def _chunk_parts(self, win: Window) -> list[tuple[ChunkIndex, Window]]:
        """The level-0 chunks ``win`` touches, each with the part of ``win`` inside it."""
        c, shape = self.chunk_px, self._arrays.label_levels[0].shape
        parts = []
        for i in range(win.r0 // c, (win.r1 - 1) // c + 1):
            for j in range(win.c0 // c, (win.c1 - 1) // c + 1):
                rows, cols = chunk_window((i, j), c, shape)
                part = win.intersect(Window(rows.start, rows.stop, cols.start, cols.stop))
                if part is not None:
                    parts.append(((i, j), part))
        return parts

    # ------------------------------------------------------------------ outlines
    def outlines_l0_px(self) -> dict[int, Polygonal]:
        """Each object's final pixels (after the overlap rule) as a (Multi)Polygon in level-0 px.

        Takes level 0 one touched chunk at a time (from the cache, else read back; never the
        whole slide) and traces all objects of the chunk at once (:func:`label_block_polygons`);
        parts of an object in several chunks are unioned. Objects left with no pixel are absent.
        Call before :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("writer is closed")
        parts: dict[int, list] = {}
        for index in sorted(self._touched):
            rows, cols = chunk_window(index, self.chunk_px, self.shapes_px[0])
            for oid, poly in label_block_polygons(self._level0_block(index), (rows.start, cols.start)):
                parts.setdefault(oid, []).append(poly)
        f = self.grid.l0_px_per_label_px
        return {oid: label_px_to_l0_px(union_parts(p), f) for oid, p in parts.items()}

    def _level0_block(self, index: ChunkIndex) -> np.ndarray:
        """A touched level-0 chunk, from the cache (its order unchanged) or read back."""
        if index in self._cache:
            return self._cache[index]
        rows, cols = chunk_window(index, self.chunk_px, self.shapes_px[0])
        return np.asarray(self._arrays.label_levels[0][rows, cols])

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        """Write level 0, build the pyramid from it (each chunk taken once) and the metadata, then
        move the result to ``path``. Idempotent."""
        if self._closed:
            return self.path
        arrays, c = self._arrays, self.chunk_px

        def write(level: int, index: ChunkIndex, block: np.ndarray) -> None:
            rows, cols = chunk_window(index, c, self.shapes_px[level])
            if level == 0:
                self._write_chunk(index, block)  # if painted since read
                self._cache.pop(index, None)
            else:
                arrays.label_levels[level][rows, cols] = block
            arrays.coverage_levels[level][rows, cols] = (block > 0).astype(np.uint8) * 255

        build_pyramid(self._touched, self._level0_block, self.shapes_px, c, write)
        self._cache.clear()  # chunks read but never painted
        colors, properties = self._label_metadata()
        write_metadata(arrays, self.fmt, self.grid.label_mpp, self.label_name, colors, properties)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial_path, self.path)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        self._closed = True
        self._cache.clear()
        shutil.rmtree(self.partial_path, ignore_errors=True)

    def _label_metadata(self) -> tuple[list[dict], list[dict]]:
        colors, properties = [], []
        for oid in sorted(self.entries):
            e = self.entries[oid]
            r, g, b = class_color_rgb(e.class_name, self.class_colors_rgb)
            colors.append({"label-value": oid, "rgba": [r, g, b, 255]})
            properties.append(
                {
                    "label-value": oid,
                    "class": e.class_name,
                    "score": e.score,
                    "prompt_id": e.prompt_id,
                    "n_px": e.n_px,
                    "truncated": e.truncated,
                }
            )
        return colors, properties

    def __enter__(self) -> "LabelImageWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
