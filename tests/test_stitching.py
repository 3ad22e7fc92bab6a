"""Stitching: label image (OME-Zarr 0.5 / 0.4), polygons, GeoParquet / QuPath GeoJSON / GeoPackage.

Real zarr, ome-zarr-py, ome-zarr-models, rasterio, geopandas and (when installed) GDAL's ogrinfo.
Slide: 4000 x 3000 level-0 px at 0.5 µm/px; labels at 1.0 µm/px -> label grid (1500, 2000),
so one label px = 2 x 2 level-0 px. Chunks of 256 -> 4 pyramid levels.
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
import tracemalloc
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
import zarr
from rasterio.features import rasterize
from rasterio.transform import Affine

from engine.records import ObjectMask
from engine.io.geojson import write_qupath_geojson
from engine.io.geopackage import write_gis_geopackage
from engine.io.geoparquet import write_geoparquet
from engine.stitching import (
    LabelImageWriter,
    object_polygon,
    objects_to_geodataframe,
)

SLIDE_W_L0_PX, SLIDE_H_L0_PX, SLIDE_MPP, LABEL_MPP = 4000, 3000, 0.5, 1.0
GRID_SHAPE_PX = (1500, 2000)
CHUNK_PX = 256
L0_PER_LABEL = LABEL_MPP / SLIDE_MPP  # 2.0


def writer(path: Path, **kw) -> LabelImageWriter:
    args = dict(
        slide_width_l0_px=SLIDE_W_L0_PX,
        slide_height_l0_px=SLIDE_H_L0_PX,
        slide_mpp=SLIDE_MPP,
        label_mpp=LABEL_MPP,
        slide_id="s1",
        chunk_px=CHUNK_PX,
    )
    args.update(kw)
    return LabelImageWriter(path, **args)


def obj(prompt_id, mask, origin_l0_px, mask_mpp=LABEL_MPP, score=0.9, class_name="duct") -> ObjectMask:
    return ObjectMask("s1", prompt_id, np.asarray(mask, bool), tuple(map(float, origin_l0_px)), mask_mpp, score, class_name)


def label_obj(prompt_id, rows, cols, **kw) -> ObjectMask:
    """A filled rectangle given in label px (rows/cols half-open), at mask_mpp == label_mpp."""
    mask = np.ones((rows[1] - rows[0], cols[1] - cols[0]), bool)
    return obj(prompt_id, mask, (cols[0] * L0_PER_LABEL, rows[0] * L0_PER_LABEL), **kw)


def disk(radius: float, size: int | None = None, center: tuple[float, float] | None = None) -> np.ndarray:
    size = size or int(2 * radius + 1)
    cy, cx = center or ((size - 1) / 2, (size - 1) / 2)
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def read_level(path: Path, level: int = 0, name: str = "objects") -> np.ndarray:
    return zarr.open_array(str(path / "labels" / name / str(level)), mode="r")[:]


# --------------------------------------------------------------------------- label image


def test_objects_land_at_the_right_place_with_their_ids(tmp_path):
    path = tmp_path / "labels.ome.zarr"
    with writer(path) as w:
        w.add(obj(0, np.ones((50, 80)), (200, 100)))  # label rows 50:100, cols 100:180
        w.add(obj(6, np.ones((100, 60)), (1000, 1001), mask_mpp=SLIDE_MPP))  # rows 500:550, cols 500:530
        w.add(obj(9, np.ones((10, 10)), (3000, 2000), mask_mpp=2.0))  # rows 1000:1020, cols 1500:1520
        w.add(obj(11, np.ones((20, 20)), (3990, 2990)))  # hangs over the slide's corner: clipped
    assert not (tmp_path / "labels.ome.zarr.partial").exists()
    expected = np.zeros(GRID_SHAPE_PX, np.uint32)
    expected[50:100, 100:180] = 1
    expected[500:550, 500:530] = 7
    expected[1000:1020, 1500:1520] = 10
    expected[1495:1500, 1995:2000] = 12
    got = read_level(path)
    assert got.dtype == np.uint32 and got.shape == GRID_SHAPE_PX
    np.testing.assert_array_equal(got, expected)


def test_object_spanning_many_chunks_is_written_whole(tmp_path):
    path = tmp_path / "labels.ome.zarr"
    mask = disk(300)  # 601 x 601 label px around the corner of chunks (1, 1) .. (2, 2)
    with writer(path) as w:
        assert w.add(obj(3, mask, (212 * L0_PER_LABEL, 212 * L0_PER_LABEL))) == mask.sum()
    expected = np.zeros(GRID_SHAPE_PX, np.uint32)
    expected[212:813, 212:813][mask] = 4
    np.testing.assert_array_equal(read_level(path), expected)
    stored = [p for p in (path / "labels/objects/0").rglob("*") if p.is_file() and p.name != "zarr.json"]
    n_chunks_total = int(np.ceil(1500 / CHUNK_PX) * np.ceil(2000 / CHUNK_PX))
    assert 9 <= len(stored) < n_chunks_total  # all touched chunks written, empty ones not


def test_overlap_rule_is_independent_of_arrival_order(tmp_path):
    a = label_obj(0, (100, 300), (100, 300), score=0.90)  # id 1
    b = label_obj(4, (200, 400), (200, 400), score=0.95)  # id 5
    c = label_obj(2, (250, 450), (150, 350), score=0.95)  # id 3: ties with b, lower id wins
    results = []
    for k, order in enumerate(itertools.permutations([a, b, c])):
        path = tmp_path / f"l{k}.ome.zarr"
        with writer(path) as w:
            for o in order:
                w.add(o)
        results.append(read_level(path))
        props = {p["label-value"]: p for p in zarr.open_group(str(path / "labels/objects")).attrs["ome"]["image-label"]["properties"]}
        assert {v: p["n_px"] for v, p in props.items()} == {v: int((results[-1] == v).sum()) for v in (1, 3, 5)}
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    got = results[0]
    assert got[150, 150] == 1  # a only
    assert got[220, 220] == 5  # a and b: higher score
    assert got[260, 260] == 3  # a, b, c: b and c tie on score, lower id
    assert got[390, 390] == 5  # b only
    assert got[420, 200] == 3  # c only
    assert got[50, 50] == 0


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_batches_painted_with_add_many_give_the_same_bytes_as_one_by_one(tmp_path, rng):
    """Overlapping objects over chunk borders, tied scores, two mask resolutions: painting them in
    shuffled batches (chunks kept in memory between batches, or written back at once) gives the
    very files of adding one by one."""
    objs = []
    for pid in range(40):
        r = rng.uniform(10, 90)
        mpp = LABEL_MPP if pid % 3 else SLIDE_MPP
        size = int(2 * r * LABEL_MPP / mpp) + 1
        origin = rng.uniform(0, 900, 2) * L0_PER_LABEL
        objs.append(obj(pid, disk(size / 2.2, size), origin, mask_mpp=mpp, score=float(rng.choice([0.5, 0.7, 0.9]))))
    one = tmp_path / "one.ome.zarr"
    with writer(one) as w:
        won_one = [w.add(o) for o in objs]
    order = rng.permutation(len(objs))
    for cached in (16, 1):  # 1: every chunk is written back (evicted) as soon as the next is painted
        many = tmp_path / f"many{cached}.ome.zarr"
        with writer(many, max_cached_chunks=cached) as w:
            for batch in np.array_split(order, 5):
                w.add_many([objs[i] for i in batch])
        assert sum(won_one) > 0 and len(tree_bytes(one)) > 10
        assert tree_bytes(many) == tree_bytes(one)  # label chunks, pyramid, coverage, metadata with n_px
    with writer(tmp_path / "bad.ome.zarr") as w:
        with pytest.raises(ValueError, match="already added"):
            w.add_many([objs[0], objs[0]])
        assert w.entries == {}  # a refused batch leaves nothing behind


@pytest.fixture(scope="module", params=["0.5", "0.4"])
def written(request, tmp_path_factory):
    """A label image with three classed objects, in NGFF 0.5 (zarr v3) or 0.4 (zarr v2)."""
    path = tmp_path_factory.mktemp(f"ngff{request.param}") / "labels.ome.zarr"
    objs = [
        label_obj(0, (100, 300), (100, 300), score=0.9, class_name="duct"),
        label_obj(4, (200, 700), (600, 1100), score=0.8, class_name="tumour"),
        label_obj(7, (1200, 1400), (1700, 1900), score=0.7, class_name=None),
    ]
    with writer(path, ngff_version=request.param) as w:
        for o in objs:
            w.add(o)
    return request.param, path


def test_pyramid_is_nearest_neighbour_and_coverage_matches(written):
    _, path = written
    level0 = read_level(path, 0)
    shapes = []
    for k in range(4):
        level = read_level(path, k)
        shapes.append(level.shape)
        np.testing.assert_array_equal(level, level0[:: 2**k, :: 2**k])  # no interpolated ids
        coverage = zarr.open_array(str(path / str(k)), mode="r")[:]
        np.testing.assert_array_equal(coverage == 255, level > 0)
    assert shapes == [(1500, 2000), (750, 1000), (375, 500), (188, 250)]
    assert not (path / "labels/objects/4").exists()


def test_pyramid_from_odd_chunks_evicted_and_partly_empty(tmp_path, rng):
    """Chunks of an odd size (chunk k of a level starts on an odd row for odd k), a cache of one
    chunk (level 0 read back) and objects in one corner only: every level is still level 0
    sampled at every 2**k-th pixel, coverage matches it, and chunks with no object are not
    written."""
    objs = [obj(k, disk(40 + 5 * k), rng.uniform(0, 1000, 2), score=0.5 + 0.1 * k) for k in range(5)]
    path = tmp_path / "labels.ome.zarr"
    with writer(path, chunk_px=77, max_cached_chunks=1) as w:
        w.add_many(objs[:2])
        w.add_many(objs[2:])
    level0 = read_level(path, 0)
    assert len(np.unique(level0)) == 6
    for k in range(w.n_levels):
        level = read_level(path, k)
        np.testing.assert_array_equal(level, level0[:: 2**k, :: 2**k])
        np.testing.assert_array_equal(zarr.open_array(str(path / str(k)), mode="r")[:] == 255, level > 0)
    n_chunks = len([p for p in (path / "labels/objects/0").rglob("*") if p.is_file() and p.name != "zarr.json"])
    assert 0 < n_chunks < np.ceil(GRID_SHAPE_PX[0] / 77) * np.ceil(GRID_SHAPE_PX[1] / 77) / 4


def test_ome_zarr_reader_reads_labels_with_scale_units_and_levels(written):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    version, path = written
    if version == "0.5":
        assert (path / "zarr.json").exists() and not (path / ".zgroup").exists()
    else:
        assert (path / ".zgroup").exists() and not (path / "zarr.json").exists()
        zarray = json.loads((path / "labels/objects/0/.zarray").read_text())
        assert zarray["dimension_separator"] == "/" and zarray["compressor"]["id"] == "blosc"
    fmt = FormatV05() if version == "0.5" else FormatV04()
    nodes = list(Reader(parse_url(str(path), fmt=fmt))())
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert len(label_nodes) == 1
    node = label_nodes[0]
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer", "micrometer"]
    assert [a["name"] for a in node.metadata["axes"]] == ["y", "x"]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0], [8.0, 8.0]]
    assert [tuple(d.shape) for d in node.data] == [(1500, 2000), (750, 1000), (375, 500), (188, 250)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), read_level(path, 0))
    props = node.metadata["properties"]
    assert props[1]["class"] == "duct" and props[1]["score"] == pytest.approx(0.9) and props[1]["prompt_id"] == 0
    assert props[5]["class"] == "tumour" and props[8]["class"] is None
    colors = node.metadata["color"]
    assert set(colors) == {1, 5, 8} and colors[1] != colors[5]
    image_nodes = [n for n in nodes if n.metadata.get("name") == "coverage"]
    assert len(image_nodes) == 1 and len(image_nodes[0].data) == 4


def test_ome_zarr_models_validates_image_labels_and_image_label(written):
    import ome_zarr_models

    version, path = written
    if version == "0.5":
        from ome_zarr_models.v05.image import Image
        from ome_zarr_models.v05.image_label import ImageLabel
        from ome_zarr_models.v05.labels import Labels
    else:
        from ome_zarr_models.v04.image import Image
        from ome_zarr_models.v04.image_label import ImageLabel
        from ome_zarr_models.v04.labels import Labels
    root = zarr.open_group(str(path), mode="r")
    image = Image.from_zarr(root)
    assert "labels" in image.members
    labels = Labels.from_zarr(root["labels"])
    image_label = ImageLabel.from_zarr(root["labels/objects"])
    # 0.5 keeps the NGFF attributes under "ome", 0.4 at the top level
    labels_attrs = labels.attributes.ome if version == "0.5" else labels.attributes
    label_attrs = image_label.attributes.ome if version == "0.5" else image_label.attributes
    assert labels_attrs.labels == ["objects"]
    props = label_attrs.image_label.properties
    assert [p.label_value for p in props] == [1, 5, 8]
    assert props[0].model_dump()["class"] == "duct" and props[0].model_dump()["score"] == pytest.approx(0.9)
    assert [c.label_value for c in label_attrs.image_label.colors] == [1, 5, 8]
    assert [a.unit for a in label_attrs.multiscales[0].axes] == ["micrometer", "micrometer"]
    assert isinstance(ome_zarr_models.open_ome_zarr(root, version=version), Image)


def test_writer_refuses_bad_records_and_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "labels.ome.zarr"
    w = writer(path)
    w.add(label_obj(0, (0, 10), (0, 10)))
    with pytest.raises(ValueError, match="already added"):
        w.add(label_obj(0, (20, 30), (20, 30)))
    with pytest.raises(ValueError, match="slide"):
        w.add(ObjectMask("other", 1, np.ones((5, 5), bool), (0.0, 0.0), 1.0, 0.5))
    with pytest.raises(ValueError, match="finite"):
        w.add(label_obj(2, (0, 10), (0, 10), score=float("nan")))
    w.abort()
    with pytest.raises(RuntimeError), writer(path) as w2:
        w2.add(label_obj(0, (0, 10), (0, 10)))
        raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []
    writer(path).close()
    with pytest.raises(FileExistsError):
        writer(path)


def test_large_sparse_label_image_keeps_memory_bounded(tmp_path):
    # 80,000 x 80,000 level-0 px at 0.25 µm/px, labels at 0.5 µm/px -> 40,000 x 40,000 uint32 = 6.4 GB
    path = tmp_path / "big.ome.zarr"
    full_bytes = 40_000 * 40_000 * 4
    mask = disk(250)  # 501 x 501 label px
    rng = np.random.default_rng(1)
    centres = rng.integers(300, 39_700, size=(20, 2))
    centres[0] = (1024, 1024)  # on a chunk corner
    centres[1] = (1024, 20_480)  # on a chunk edge
    objs = [
        ObjectMask("big", i, mask, (float((cx - 250) * 2), float((cy - 250) * 2)), 0.5, 0.5 + i / 100, "duct")
        for i, (cy, cx) in enumerate(centres)
    ]
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with LabelImageWriter(path, slide_width_l0_px=80_000, slide_height_l0_px=80_000, slide_mpp=0.25, label_mpp=0.5, chunk_px=1024) as w:
            for o in objs:
                w.add(o)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - t0
    level0 = zarr.open_array(str(path / "labels/objects/0"), mode="r")
    assert level0.shape == (40_000, 40_000) and len(w.shapes_px) == 7
    n_checked = 0
    for i, (cy, cx) in enumerate(centres):  # objects that overlap no other one are there whole
        if all(np.abs(centres[k] - centres[i]).max() > 501 for k in range(len(centres)) if k != i):
            window = level0[cy - 251 : cy + 252, cx - 251 : cx + 252]
            np.testing.assert_array_equal(window[1:-1, 1:-1] == i + 1, mask)
            assert (window[0] == 0).all() and (window[-1] == 0).all()
            n_checked += 1
    assert n_checked >= 10
    assert sum(e.n_px for e in w.entries.values()) <= 20 * mask.sum()
    disk_bytes = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(f"peak traced {peak / 2**20:.1f} MiB for a {full_bytes / 2**30:.1f} GiB array; on disk {disk_bytes / 2**20:.2f} MiB; {seconds:.1f} s")
    assert peak < full_bytes / 50  # < 128 MB, i.e. a handful of chunks
    assert disk_bytes < 20 * 2**20


# --------------------------------------------------------------------------- polygons


def test_ring_becomes_polygon_with_one_hole():
    ring = disk(40, size=81) & ~disk(15, size=81)
    o = obj(0, ring, (1000, 500), mask_mpp=SLIDE_MPP)  # one mask px = one level-0 px
    poly = object_polygon(o, SLIDE_MPP)
    assert poly.geom_type == "Polygon" and poly.is_valid
    assert len(poly.interiors) == 1
    assert poly.area == pytest.approx(ring.sum())  # level-0 px²
    assert shapely.Polygon(poly.interiors[0]).area == pytest.approx(disk(15, size=81).sum())
    assert poly.bounds == (1000.0, 500.0, 1081.0, 581.0)


def test_specks_are_dropped():
    mask = np.zeros((60, 60), bool)
    mask[10:30, 10:30] = True  # 400 level-0 px = 100 µm²
    mask[50:53, 50:53] = True  # 9 px = 2.25 µm² speck
    o = obj(0, mask, (0, 0), mask_mpp=SLIDE_MPP)
    poly = object_polygon(o, SLIDE_MPP)  # default min_area_um2 = 10
    assert poly.geom_type == "Polygon" and poly.area * SLIDE_MPP**2 == pytest.approx(100.0)
    both = object_polygon(o, SLIDE_MPP, min_area_um2=0)
    assert both.geom_type == "MultiPolygon" and len(both.geoms) == 2
    speck_only = obj(1, mask & (np.arange(60)[:, None] > 40), (0, 0), mask_mpp=SLIDE_MPP)
    assert object_polygon(speck_only, SLIDE_MPP) is None
    gdf = objects_to_geodataframe([o, speck_only], SLIDE_MPP)
    assert gdf["object_id"].tolist() == [1]


def blob(rng, size: int) -> np.ndarray:
    """Irregular connected blob: union of overlapping discs around the centre."""
    m = np.zeros((size, size), bool)
    for _ in range(6):
        c = size / 2 + rng.normal(0, size / 10, 2)
        m |= disk(rng.uniform(size / 6, size / 4), size=size, center=(c[0], c[1]))
    return m


def test_polygons_agree_with_label_pixels(tmp_path, rng):
    objs = [
        obj(0, blob(rng, 200), (400, 400), mask_mpp=0.5),  # finer than the label grid
        obj(1, blob(rng, 120), (1600, 600), mask_mpp=1.0),  # same as the label grid
        obj(2, blob(rng, 60), (600, 1800), mask_mpp=1.5),  # coarser, not a multiple
        obj(3, blob(rng, 150), (2501.5, 1333.25), mask_mpp=0.75),  # off-grid origin
    ]
    path = tmp_path / "labels.ome.zarr"
    with writer(path) as w:
        for o in objs:
            w.add(o)
    label = read_level(path)
    to_l0 = Affine.scale(L0_PER_LABEL)  # label px -> level-0 px
    for o in objs:
        poly = object_polygon(o, SLIDE_MPP)
        burnt = rasterize([(poly, 1)], out_shape=GRID_SHAPE_PX, transform=to_l0, dtype="uint8").astype(bool)
        mine = label == o.object_id
        iou = (burnt & mine).sum() / (burnt | mine).sum()
        assert iou >= 0.98, (o.object_id, iou)
        # stronger: label sampling follows GDAL's rasterisation rule, so they agree exactly
        np.testing.assert_array_equal(burnt, mine)


# --------------------------------------------------------------------------- vector files


@pytest.fixture
def gdf():
    ring = disk(40, size=81) & ~disk(15, size=81)
    two = np.zeros((40, 80), bool)
    two[5:35, 5:35] = two[5:35, 45:75] = True
    return objects_to_geodataframe(
        [
            obj(0, ring, (1000, 500), mask_mpp=SLIDE_MPP, score=0.91, class_name="duct"),
            obj(3, two, (2000, 2000), mask_mpp=1.0, score=0.5, class_name="tumour"),
            obj(5, np.ones((20, 20)), (10, 10), mask_mpp=1.0, score=0.7, class_name=None),
        ],
        SLIDE_MPP,
    )


def test_geodataframe_columns_units_and_geometry(gdf):
    assert gdf.crs is None
    assert list(gdf.columns) == ["object_id", "prompt_id", "class_name", "score", "area_um2", "geometry"]
    assert gdf["object_id"].tolist() == [1, 4, 6]
    assert gdf.geometry.geom_type.tolist() == ["Polygon", "MultiPolygon", "Polygon"]
    # 20 x 20 mask px at 1 µm/px = 400 µm²; it sits at level-0 (10, 10) .. (50, 50)
    assert gdf["area_um2"].iloc[2] == pytest.approx(400.0)
    assert gdf.geometry.iloc[2].bounds == (10.0, 10.0, 50.0, 50.0)


def test_geoparquet_rereads_without_crs_and_same_geometry(gdf, tmp_path):
    path = write_geoparquet(gdf, tmp_path / "objects.parquet")
    back = gpd.read_parquet(path)
    assert back.crs is None
    assert back.geometry.geom_equals_exact(gdf.geometry, tolerance=0).all()
    assert back.drop(columns="geometry").equals(gdf.drop(columns="geometry"))
    geo = json.loads(pq.read_metadata(path).metadata[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    assert "crs" in column and column["crs"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["objects.parquet"]


def test_qupath_geojson_has_qupath_fields(gdf, tmp_path):
    path = write_qupath_geojson(gdf, tmp_path / "objects.geojson")
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == 3
    for feat, (_, row) in zip(doc["features"], gdf.iterrows()):
        props = feat["properties"]
        assert props["objectType"] == "detection"
        assert set(props["measurements"]) == {"score", "area_um2", "object_id"}
        assert props["measurements"]["object_id"] == row["object_id"]
        assert props["name"]
        assert shapely.geometry.shape(feat["geometry"]).equals(row.geometry)  # level-0 px
    duct = doc["features"][0]["properties"]["classification"]
    assert duct["name"] == "duct" and len(duct["color"]) == 3 and all(0 <= v <= 255 for v in duct["color"])
    assert "classification" not in doc["features"][2]["properties"]  # unclassified
    ann = json.loads(write_qupath_geojson(gdf, tmp_path / "a.geojson", object_type="annotation").read_text())
    assert {f["properties"]["objectType"] for f in ann["features"]} == {"annotation"}


def test_gis_geopackage_has_y_negated_and_no_crs(gdf, tmp_path):
    path = write_gis_geopackage(gdf, tmp_path / "objects.gpkg")
    back = gpd.read_file(path)
    assert back.crs is None
    unflipped = shapely.transform(back.geometry.values, lambda xy: xy * [1.0, -1.0])
    assert all(a.equals(b) for a, b in zip(unflipped, gdf.geometry))
    assert back.total_bounds[3] <= 0


def test_failed_write_leaves_previous_file_and_no_temp(gdf, tmp_path):
    path = write_qupath_geojson(gdf, tmp_path / "objects.geojson")
    before = path.read_bytes()
    bad = gdf.copy()
    bad["score"] = [object()] * len(bad)  # not JSON-serialisable: fails mid-write
    with pytest.raises(TypeError):
        write_qupath_geojson(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["objects.geojson"]


def _ogr_formats() -> str:
    return subprocess.run(["ogrinfo", "--formats"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(
    "writer_fn,name,driver",
    [
        (write_qupath_geojson, "objects.geojson", "GeoJSON"),
        (write_geoparquet, "objects.parquet", "Parquet"),
        (write_gis_geopackage, "objects.gpkg", "GPKG"),
    ],
)
def test_gdal_opens_vector_files(gdf, tmp_path, writer_fn, name, driver):
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo not on PATH (apt-get install gdal-bin)")
    if f" {driver} " not in _ogr_formats().replace("(", " ("):
        pytest.skip(f"this GDAL build has no {driver} driver")
    path = writer_fn(gdf, tmp_path / name)
    out = subprocess.run(["ogrinfo", "-ro", "-so", "-al", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Feature Count: 3" in out.stdout


def test_outlines_from_the_label_image_burn_back_to_its_pixels(tmp_path, rng):
    """Overlapping blobs spanning many small chunks: the traced outlines (unioned across chunks)
    do not overlap, burn back exactly to each object's final pixels, and an object that lost all
    its pixels has none."""
    objs = [obj(k, blob(rng, 150), (300 + 90 * k, 250 + 60 * k), mask_mpp=0.75, score=0.5 + 0.05 * (k % 3))
            for k in range(6)]
    objs.append(obj(6, np.ones((8, 8)), (500, 420), mask_mpp=1.0, score=0.1))  # inside object 1, loses all
    path = tmp_path / "labels.ome.zarr"
    w = writer(path, chunk_px=32)
    for o in objs:
        w.add(o)
    outlines = w.outlines_l0_px()
    w.close()
    label = read_level(path)
    assert set(outlines) == set(np.unique(label)) - {0} and 7 not in outlines
    assert w.entries[7].n_px == 0 < w.entries[7].n_px_raw
    for oid, poly in outlines.items():
        assert poly.is_valid
        burnt = rasterize([(poly, 1)], out_shape=GRID_SHAPE_PX, transform=Affine.scale(L0_PER_LABEL), dtype="uint8")
        np.testing.assert_array_equal(burnt.astype(bool), label == oid)
        assert poly.area == (label == oid).sum() * L0_PER_LABEL**2
    for a, b in itertools.combinations(outlines.values(), 2):
        assert a.intersection(b).area == 0


def test_block_tracing_keeps_ids_above_int32_and_grid_offsets():
    from engine.stitching.polygons import label_block_polygons

    block = np.zeros((6, 6), np.uint32)
    block[1:3, 1:4], block[4:6, 0:2] = 2**32 - 2, 7
    got = sorted((k, p.area, p.bounds) for k, p in label_block_polygons(block, (10, 20)))
    assert got == [(7, 4.0, (20.0, 14.0, 22.0, 16.0)), (2**32 - 2, 6.0, (21.0, 11.0, 24.0, 13.0))]
