"""The single writer of one slide's outputs: ObjectMask records -> labels.ome.zarr, objects.parquet,
objects.geojson, prompts.geojson, qc.png and summary.json, written into ``.<slide_id>.partial/`` and
published whole by :meth:`SlideWriter.commit` (polygons are traced from the label image).

Its own module, so that what plans, reads and segments (``engine.pipeline``, Ray's reader and model
actors) does not import the stitching stack (ome-zarr, geopandas: over a second).
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from pathlib import Path

import numpy as np

from .io.geojson import write_qupath_geojson
from .io.geoparquet import write_geoparquet
from .io.prompt_files import write_prompts_geojson
from .output_folder import SUMMARY_NAME, inside, partial_dir, remove_tree, slide_dir
from .pipeline import OutputConfig
from .records import ObjectMask, Prompt
from .slide_result import GEOJSON_NAME, LABELS_NAME, PARQUET_NAME, PROMPTS_NAME, QC_NAME
from .slides import SlideInfo
from .stitching.label_image import LabelImageWriter
from .stitching.mask_cleaning import clean_mask
from .stitching.nms import CandidateSet
from .stitching.polygons import SLIDE_COLUMNS, rows_to_geodataframe
from .stitching.qc_picture import write_slide_qc
from .slides.thumbnail import qc_thumbnail

#: SlideWriter.timings keys: label image painting (add), then at commit polygons and the three outputs.
WRITER_STAGES = ("stitch_labels", "vectorise", "write_pyramid", "write_parquet", "write_geojson", "write_qc")


class SlideWriter:
    """Single writer of one slide's outputs, into a ``.partial`` folder published by :meth:`commit`."""

    def __init__(self, info: SlideInfo, output_dir: str | os.PathLike, label_mpp: float, cfg: OutputConfig) -> None:
        self.output_dir = Path(output_dir)
        self.info = info
        self.final = slide_dir(output_dir, info.slide_id)
        self.partial = partial_dir(output_dir, info.slide_id)
        remove_tree(output_dir, self.partial.name)  # left by a run that died
        self.partial.mkdir(parents=True)
        self.slide_mpp = info.mpp
        self.cfg = cfg
        self.labels = LabelImageWriter(self.partial / LABELS_NAME, slide_width_l0_px=info.width_l0_px,
                                       slide_height_l0_px=info.height_l0_px, slide_mpp=info.mpp,
                                       label_mpp=label_mpp, slide_id=info.slide_id, ngff_version=cfg.ngff_version)
        self.rows: list[dict] = []
        self.candidates = None if cfg.mask_filter is None else CandidateSet(self.labels.grid, cfg.mask_filter)
        # Seconds per output stage (label image, polygons, pyramid, parquet, geojson), for benchmarks,
        # by ``clock`` (wall time by default; a benchmark may set time.process_time).
        self.timings = dict.fromkeys(WRITER_STAGES, 0.0)
        self.clock = time.perf_counter

    def add(self, obj: ObjectMask) -> None:
        """Paint one object (see :meth:`add_many`)."""
        self.add_many([obj])

    def add_many(self, objects: list[ObjectMask]) -> None:
        """Clean each mask of small parts and holes, then paint the batch into the label image (one
        write per touched chunk); when segmenting everything, keep those passing score and stability
        for NMS at commit instead. The records given are not changed."""
        t0 = self.clock()
        kept = []
        for obj in objects:
            if self.candidates is None or self.candidates.passes(obj):
                px_um2 = obj.mask_mpp**2
                kept.append(dataclasses.replace(obj, mask=clean_mask(obj.mask, self.cfg.min_area_um2 / px_um2,
                                                                     self.cfg.min_hole_um2 / px_um2)))
        if self.candidates is not None:
            for obj in kept:
                self.candidates.add(obj)  # painted at commit, after NMS
        else:
            self.labels.add_many([obj for obj in kept if obj.mask.any()])
        self.timings["stitch_labels"] += self.clock() - t0

    def object_rows(self) -> tuple[list[dict], dict]:
        """One row per object with pixels left in the label image, traced from those pixels.

        The overlap rule has run by now, so polygons do not overlap and each one's area is its
        label pixel count times the label pixel area. An object whose pixels all went to
        neighbours (or that fell outside the slide) gets no row; fragments a neighbour left are
        kept whatever their size, so polygons and pixels stay one truth. Returns the rows and
        the counts for ``summary.json``.
        """
        outlines = self.labels.outlines_l0_px()
        label_px_um2 = self.labels.grid.label_mpp**2
        rows = []
        for oid, e in self.labels.entries.items():
            geom = outlines.get(oid)
            if geom is None:
                continue
            rows.append({"object_id": oid, "prompt_id": e.prompt_id, "class_name": e.class_name, "score": e.score,
                         "area_um2": float(geom.area * self.slide_mpp**2),
                         "area_raw_um2": float(e.n_px_raw * label_px_um2),
                         "lost_to_neighbour": e.n_px < e.n_px_raw, "truncated": e.truncated, "geometry": geom})
        counts = {"polygons": len(rows), "objects_without_pixels": len(self.labels.entries) - len(rows),
                  "objects_lost_to_neighbour": sum(r["lost_to_neighbour"] for r in rows),
                  "objects_truncated": sum(r["truncated"] for r in rows),
                  "rule": "polygons are traced from the label image after the overlap rule; an object left "
                          "with no pixel has no polygon"}
        return rows, counts

    def commit(self, summary: dict, prompts: list[Prompt], thumbnail: np.ndarray | None = None) -> Path:
        """Trace polygons from the label image, write every output and publish the slide folder.

        ``prompts``: the plan's prompts (each segmented once), written to ``prompts.geojson``.
        ``thumbnail``: the slide's :func:`~engine.slides.thumbnail.qc_thumbnail`, read by whoever
        has the slide open, for ``qc.png``; without it (and with ``qc``) the writer opens the slide.
        Python's cyclic garbage collector is paused meanwhile: tracing and writing allocate many
        small containers (freed when done), which would set off full collections over every
        object of the process (a loaded model: about half a second each).
        """
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._commit(summary, prompts, thumbnail)
        finally:
            if was_enabled:
                gc.enable()

    def _commit(self, summary: dict, prompts: list[Prompt], thumbnail: np.ndarray | None) -> Path:
        t0 = self.clock()
        if self.candidates is not None:  # segment everything: duplicates removed before painting
            self.labels.add_many(list(self.candidates.select()))
            summary["mask_filter"] = self.candidates.report()
            self.timings["stitch_labels"] += self.clock() - t0
            t0 = self.clock()
        rows, summary["vectors"] = self.object_rows()
        t1 = self.clock()
        self.labels.close()
        t2 = self.clock()
        gdf = rows_to_geodataframe(rows, SLIDE_COLUMNS)
        write_geoparquet(gdf, self.partial / PARQUET_NAME)
        t3 = self.clock()
        write_qupath_geojson(gdf, self.partial / GEOJSON_NAME, object_type=self.cfg.geojson_object_type,
                             slide_id=self.info.slide_id)
        t4 = self.clock()
        write_prompts_geojson(prompts, self.partial / PROMPTS_NAME, slide_column=None, id_column="prompt_id")
        if self.cfg.qc:  # the only output that needs the slide's pixels (a thumbnail)
            if thumbnail is None:
                with self.info.open() as slide:
                    thumbnail = qc_thumbnail(slide)
            write_slide_qc(thumbnail, self.info.width_l0_px, gdf, prompts, self.partial / QC_NAME)
        self.timings["write_qc"] += self.clock() - t4
        self.timings["vectorise"] += t1 - t0
        self.timings["write_pyramid"] += t2 - t1
        self.timings["write_parquet"] += t3 - t2
        self.timings["write_geojson"] += t4 - t3
        (self.partial / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
        old = None
        if self.final.exists():  # a slide redone with --overwrite: the old outputs go only once the new are in
            old = inside(self.output_dir, f".{self.final.name}.replaced")
            remove_tree(self.output_dir, old.name)
            os.replace(self.final, old)
        os.replace(self.partial, self.final)
        if old is not None:
            remove_tree(self.output_dir, old.name)
        return self.final

    def abort(self) -> None:
        self.labels.abort()
        remove_tree(self.output_dir, self.partial.name)
