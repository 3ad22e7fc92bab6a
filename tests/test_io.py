"""engine.io: the one GeoJSON reader and writer, ids, colours and the atomic write."""
from __future__ import annotations

import json
import uuid

import geopandas as gpd
import pytest
from shapely.geometry import MultiPoint, Polygon, box

from engine.io import atomic
from engine.io.colors import class_color_rgb
from engine.io.geojson import read_geojson_features, write_qupath_geojson
from engine.io.objects import read_object_polygons
from engine.io.prompt_files import write_prompts_geojson
from engine.io.values import classification_name
from engine.records import Prompt


@pytest.fixture
def objects():
    return gpd.GeoDataFrame({"object_id": [1, 2, 5], "class_name": ["duct", None, "nest"], "score": [0.9, 0.5, 0.7],
                             "area_um2": [1.0, 2.0, 3.0]},
                            geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10), box(0, 20, 10, 30)], crs=None)


def test_object_ids_are_stable_uuids_per_slide_and_object(objects, tmp_path):
    a = write_qupath_geojson(objects, tmp_path / "a.geojson", slide_id="s1")
    b = write_qupath_geojson(objects, tmp_path / "b.geojson", slide_id="s1")
    assert a.read_bytes() == b.read_bytes()  # reruns write the same bytes
    ids = [f["id"] for f in json.loads(a.read_text())["features"]]
    assert len(set(ids)) == 3 and all(uuid.UUID(i).version == 5 for i in ids)
    other = write_qupath_geojson(objects, tmp_path / "c.geojson", slide_id="s2")
    assert not set(ids) & {f["id"] for f in json.loads(other.read_text())["features"]}
    # in the output layout the slide comes from the folder: .partial or published, the same ids
    for folder in (".s1.partial", "s1"):
        (tmp_path / folder).mkdir()
        doc = json.loads(write_qupath_geojson(objects, tmp_path / folder / "objects.geojson").read_text())
        assert [f["id"] for f in doc["features"]] == ids
    props = json.loads(a.read_text())["features"][0]["properties"]
    assert props["measurements"] == {"score": 0.9, "area_um2": 1.0, "object_id": 1}


def test_one_reader_for_qupath_list_collection_nested_class_and_multipoint(tmp_path):
    feats = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [1, 2, 3]}}},
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
         "properties": {"classification": "Stroma", "group": "g", "slide_id": "s"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]}, "properties": {"class_name": "x"}},
    ]
    bare = tmp_path / "bare.geojson"
    bare.write_text(json.dumps(feats))
    fc = tmp_path / "fc.json"
    fc.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    for path in (bare, fc):
        got = read_geojson_features(path)
        assert [f.where for f in got] == ["feature 0", "feature 1", "feature 2"]
        assert [classification_name(f.properties) for f in got] == ["Tumor", "Stroma", "x"]
        assert isinstance(got[0].geometry, Polygon) and got[1].geometry.equals(MultiPoint([(1, 2), (3, 4)]))
        assert got[1].properties["group"] == "g" and got[1].properties["slide_id"] == "s"
        with pytest.warns(UserWarning, match="2 feature.s. without polygonal geometry skipped"):
            polys = read_object_polygons(path)  # points are not objects
        assert polys.class_name.tolist() == ["Tumor"] and polys.object_id.tolist() == [1]


def test_written_objects_read_back_with_ids_and_classes(objects, tmp_path):
    path = write_qupath_geojson(objects, tmp_path / "objects.geojson", slide_id="s")
    back = read_object_polygons(path)
    assert back.object_id.tolist() == [1, 2, 5]
    assert back.class_name[0] == "duct" and back.class_name.isna()[1] and back.class_name[2] == "nest"
    assert all(a.equals(b) for a, b in zip(back.geometry, objects.geometry))


def test_prompts_and_objects_share_one_class_colour(objects, tmp_path):
    obj = json.loads(write_qupath_geojson(objects, tmp_path / "o.geojson", slide_id="s").read_text())
    prm = json.loads(write_prompts_geojson([Prompt("s", 0, (0, 0, 5, 5), class_name="duct")],
                                           tmp_path / "p.geojson").read_text())
    colour = list(class_color_rgb("duct"))
    assert obj["features"][0]["properties"]["classification"]["color"] == colour
    assert prm["features"][0]["properties"]["classification"]["color"] == colour


def test_atomic_write_keeps_the_old_file_when_serialising_fails(tmp_path):
    path = atomic.write_json(tmp_path / "x.json", {"a": 1})
    with pytest.raises(TypeError):
        atomic.write_json(path, {"a": object()})
    with pytest.raises(RuntimeError):
        atomic.write_atomic(path, lambda tmp: (tmp.write_text("half"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
