"""Prompt files -> Prompt records: QuPath GeoJSON, CSV, GeoParquet, validation against a slide."""
from __future__ import annotations

import json
import math
import warnings

import pytest

from engine.prompts import (
    PromptError,
    PromptFileError,
    check_slide_ids,
    read_prompts,
    validate_prompts,
)
from engine.io.prompt_files import write_prompts_geojson
from engine.records import Prompt


def rect(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def feature(geometry, **props):
    return {"type": "Feature", "geometry": geometry, "properties": {"objectType": "annotation", **props}}


def qupath_class(name):
    return {"name": name, "color": [255, 0, 0]}


@pytest.fixture
def qupath_features():
    """Features as QuPath exports them (annotation objects in level-0 px, no CRS)."""
    return [
        feature(rect(100, 200, 400, 260), classification=qupath_class("Tumor"), name="rect A"),
        feature({"type": "Polygon", "coordinates": [[[1000, 50], [1300, 120], [1150, 400], [1000, 50]]]},
                classification=qupath_class("Stroma")),
        feature({"type": "Point", "coordinates": [500.5, 600.25]}),
        feature({"type": "MultiPoint", "coordinates": [[10, 20], [30, 40], [50, 60]]},
                classification=qupath_class("Immune cells")),
        # a negative point, marked by QuPath classification, grouped with a box
        feature(rect(2000, 2000, 2200, 2100), group=7, classification=qupath_class("Tumor")),
        feature({"type": "Point", "coordinates": [2100, 2050]}, group=7, classification=qupath_class("Background")),
        # explicit label 0 on one of two points
        feature({"type": "MultiPoint", "coordinates": [[5, 5], [9, 9]]}, point_labels=[1, 0]),
    ]


def check_qupath_prompts(prompts):
    assert [p.prompt_id for p in prompts] == list(range(6))
    a, poly, pt, multi, grouped, mixed = prompts
    assert a.box_l0_px == (100, 200, 400, 260) and a.class_name == "Tumor" and a.name == "rect A"
    assert a.points_l0_px == ()
    assert poly.box_l0_px == (1000, 50, 1300, 400) and poly.class_name == "Stroma"
    assert pt.box_l0_px is None and pt.points_l0_px == ((500.5, 600.25),) and pt.point_labels == (1,)
    assert multi.points_l0_px == ((10, 20), (30, 40), (50, 60)) and multi.point_labels == (1, 1, 1)
    assert multi.class_name == "Immune cells"
    assert grouped.box_l0_px == (2000, 2000, 2200, 2100)
    assert grouped.points_l0_px == ((2100, 2050),) and grouped.point_labels == (0,)
    assert grouped.class_name == "Tumor"  # "Background" marks the label, not the class
    assert mixed.point_labels == (1, 0)


def test_qupath_list_and_featurecollection(tmp_path, qupath_features):
    bare = tmp_path / "slide.geojson"
    bare.write_text(json.dumps(qupath_features))
    fc = tmp_path / "slide_fc.json"
    fc.write_text(json.dumps({"type": "FeatureCollection", "features": qupath_features}))
    for path in (bare, fc):
        out = read_prompts(path, slide_id="S1")
        assert list(out) == ["S1"]
        assert all(p.slide_id == "S1" for p in out["S1"])
        check_qupath_prompts(out["S1"])
    single = tmp_path / "one.geojson"
    single.write_text(json.dumps(qupath_features[0]))
    assert read_prompts(single, slide_id="S1")["S1"][0].box_l0_px == (100, 200, 400, 260)


def test_label_property_and_negative_class(tmp_path):
    feats = [
        feature({"type": "Point", "coordinates": [1, 1]}, label=1, classification=qupath_class("Negative")),
        feature({"type": "Point", "coordinates": [2, 2]}, group="g", label=1),
        feature({"type": "Point", "coordinates": [3, 3]}, group="g", label=0),
        feature({"type": "Point", "coordinates": [4, 4]}, group="g", classification="background"),
    ]
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps(feats))
    first, grp = read_prompts(path, slide_id="s")["s"]
    assert first.point_labels == (1,)  # explicit label beats the class name
    assert grp.points_l0_px == ((2, 2), (3, 3), (4, 4)) and grp.point_labels == (1, 0, 0)


def test_negative_only_prompt_is_an_error(tmp_path):
    path = tmp_path / "neg.geojson"
    path.write_text(json.dumps([feature({"type": "Point", "coordinates": [1, 1]},
                                        classification=qupath_class("Negative"))]))
    with pytest.raises(PromptFileError, match=r"neg\.geojson: feature 0: .*only negative points"):
        read_prompts(path, slide_id="s")


def test_writer_round_trip(tmp_path):
    prompts = [
        Prompt("S1", 0, box_l0_px=(10.5, 20.0, 30.0, 40.25), class_name="Tumor", name="first"),
        Prompt("S1", 1, points_l0_px=((5.0, 6.0),), point_labels=(1,)),
        Prompt("S1", 2, box_l0_px=(0.0, 0.0, 100.0, 50.0), points_l0_px=((50.0, 25.0), (10.0, 10.0)),
               point_labels=(1, 0), class_name="Stroma"),
        Prompt("S1", 3, points_l0_px=((1.0, 2.0), (3.0, 4.0)), point_labels=(1, 1), name="pair"),
    ]
    path = write_prompts_geojson(prompts, tmp_path / "out.geojson")
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert all(f["properties"]["objectType"] == "annotation" for f in doc["features"])
    assert doc["features"][0]["properties"]["classification"]["name"] == "Tumor"
    assert read_prompts(path, slide_id="S1") == {"S1": prompts}
    assert read_prompts(path) == {"S1": prompts}  # slide_id property written


def test_csv_boxes_points_groups(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text(
        "\ufeffx0,y0,x1,y1,x,y,label,class_name,group,name,extra\n"
        "10,20,110,220,,,,Tumor,,box one,ignored\n"
        ",,,,5,6,,,,,\n"
        "0,0,50,50,,,,Stroma,g1,,\n"
        ",,,,25,25,1,,g1,,\n"
        ",,,,40,40,0,,g1,,\n"
        "\n"
        "300,300,310,320,305,305,1,,,both,\n"
    )
    out = read_prompts(path, slide_id="A")["A"]
    assert [p.prompt_id for p in out] == [0, 1, 2, 3]
    assert out[0].box_l0_px == (10, 20, 110, 220) and out[0].class_name == "Tumor" and out[0].name == "box one"
    assert out[1].box_l0_px is None and out[1].points_l0_px == ((5, 6),) and out[1].point_labels == (1,)
    assert out[2].box_l0_px == (0, 0, 50, 50) and out[2].class_name == "Stroma"
    assert out[2].points_l0_px == ((25, 25), (40, 40)) and out[2].point_labels == (1, 0)
    assert out[3].box_l0_px == (300, 300, 310, 320) and out[3].points_l0_px == ((305, 305),)


def test_csv_points_only_and_um_units(tmp_path):
    path = tmp_path / "pts.csv"
    path.write_text("x,y,slide_id\n10,20,A\n1,2,B\n")
    out = read_prompts(path, units="um", slide_mpp={"A": 0.5, "B": 0.25})
    assert out["A"][0].points_l0_px == ((20.0, 40.0),)
    assert out["B"][0].points_l0_px == ((4.0, 8.0),)
    with pytest.raises(PromptFileError, match="slide_mpp"):
        read_prompts(path, units="um")


def test_csv_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("x0,y0,x1,class_name\n1,2,3,a\n")
    with pytest.raises(PromptFileError, match=r"bad\.csv: missing required columns.*missing y1"):
        read_prompts(path, slide_id="s")
    path.write_text("a,b\n1,2\n")
    with pytest.raises(PromptFileError, match="missing required columns"):
        read_prompts(path, slide_id="s")


def test_csv_row_errors_name_the_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("x0,y0,x1,y1\n0,0,10,10\n5,5,5,20\n")
    with pytest.raises(PromptFileError, match=r"rows\.csv: line 3: zero-area box"):
        read_prompts(path, slide_id="s")
    path.write_text("x,y\n1,2\nnan,4\n")
    with pytest.raises(PromptFileError, match=r"rows\.csv: line 3: column 'x' is 'nan'"):
        read_prompts(path, slide_id="s")
    path.write_text("x,y,label\n1,2,maybe\n")
    with pytest.raises(PromptFileError, match=r"line 2: label must be 1 .* 'maybe'"):
        read_prompts(path, slide_id="s")


def test_geoparquet_cohort(tmp_path):
    import geopandas as gpd
    from shapely.geometry import MultiPoint, Point, box

    gdf = gpd.GeoDataFrame(
        {
            "slide_id": ["A", "B", "A", "B"],
            "label": [None, 0, None, None],
            "group": [None, 1, None, 1],
            "class_name": ["Tumor", None, None, None],
        },
        geometry=[box(10, 20, 30, 40), Point(7, 8), MultiPoint([(1, 1), (2, 2)]), box(0, 0, 100, 100)],
        crs=None,
    )
    path = tmp_path / "cohort.parquet"
    gdf.to_parquet(path)
    out = read_prompts(path)
    assert sorted(out) == ["A", "B"]
    a0, a1 = out["A"]
    assert a0.box_l0_px == (10, 20, 30, 40) and a0.class_name == "Tumor"
    assert a1.points_l0_px == ((1, 1), (2, 2)) and a1.point_labels == (1, 1)
    (b0,) = out["B"]
    assert b0.box_l0_px == (0, 0, 100, 100) and b0.points_l0_px == ((7, 8),) and b0.point_labels == (0,)
    # one slide out of a cohort file
    assert read_prompts(path, slide_id="B") == {"B": out["B"]}
    with pytest.raises(PromptFileError, match=r"no prompts for slide 'C'.*\['A', 'B'\]"):
        read_prompts(path, slide_id="C")
    # a CRS is ignored, with a warning (pixels are not degrees)
    gdf.set_crs("EPSG:4326").to_parquet(tmp_path / "crs.geoparquet")
    with pytest.warns(UserWarning, match="CRS EPSG:4326"):
        assert read_prompts(tmp_path / "crs.geoparquet") == out


def test_cohort_unknown_slide_ids(tmp_path):
    path = tmp_path / "cohort.csv"
    path.write_text("slide_id,x0,y0,x1,y1\nA,0,0,10,10\nZZZ,0,0,10,10\nA,5,5,9,9\nQ,1,1,2,2\n")
    out = read_prompts(path)
    assert [p.prompt_id for p in out["A"]] == [0, 1]
    check_slide_ids({"A": out["A"]}, ["A", "B"])
    with pytest.raises(PromptFileError, match=r"cohort\.csv: .*2 unknown slide id\(s\): \['Q', 'ZZZ'\]"):
        check_slide_ids(out, ["A", "B"], path=path)
    path.write_text("x0,y0,x1,y1\n0,0,10,10\n")
    with pytest.raises(PromptFileError, match="no slide id"):
        read_prompts(path)


def test_broken_files(tmp_path):
    bad_json = tmp_path / "broken.geojson"
    bad_json.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(PromptFileError, match=r"broken\.geojson: not valid JSON"):
        read_prompts(bad_json, slide_id="s")

    not_geo = tmp_path / "config.json"
    not_geo.write_text(json.dumps({"model": "vit_b", "batch": 4}))
    with pytest.raises(PromptFileError, match=r"config\.json: not GeoJSON"):
        read_prompts(not_geo, slide_id="s")

    line = tmp_path / "line.geojson"
    line.write_text(json.dumps([feature(rect(0, 0, 5, 5)),
                                feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]})]))
    with pytest.raises(PromptFileError, match=r"line\.geojson: feature 1: unsupported geometry type 'LineString'"):
        read_prompts(line, slide_id="s")

    flat = tmp_path / "flat.geojson"
    flat.write_text(json.dumps([feature({"type": "Polygon", "coordinates": [[[0, 5], [9, 5], [4, 5], [0, 5]]]})]))
    with pytest.raises(PromptFileError, match=r"flat\.geojson: feature 0: zero-area box"):
        read_prompts(flat, slide_id="s")

    fake_parquet = tmp_path / "prompts.parquet"
    fake_parquet.write_text("x0,y0,x1,y1\n0,0,1,1\n")
    with pytest.raises(PromptFileError, match=r"prompts\.parquet: not a readable Parquet file"):
        read_prompts(fake_parquet, slide_id="s")

    with pytest.raises(PromptFileError, match=r"missing\.csv: file not found"):
        read_prompts(tmp_path / "missing.csv", slide_id="s")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(PromptFileError, match="unknown prompt file type '.txt'"):
        read_prompts(tmp_path / "p.txt", slide_id="s")


def test_validate_outside_clip_and_counts():
    W, H = 1000, 800
    prompts = [
        Prompt("s", 0, box_l0_px=(10, 10, 100, 100)),  # inside
        Prompt("s", 1, box_l0_px=(900, 700, 1200, 900)),  # partly outside -> clipped
        Prompt("s", 2, box_l0_px=(1000, 0, 1100, 50)),  # touches the right edge only -> outside
        Prompt("s", 3, points_l0_px=((-5, 10),), point_labels=(1,)),  # outside
        Prompt("s", 4, points_l0_px=((5, 10), (5000, 10)), point_labels=(1, 1)),  # one point removed
        Prompt("s", 5, box_l0_px=(-50, -50, -1, -1)),  # outside
    ]
    with pytest.warns(UserWarning, match=r"dropped 3 of 6 prompt\(s\) wholly outside .*prompt ids 2, 3, 5"):
        kept, report = validate_prompts(prompts, W, H)
    assert (report.read, report.kept, report.dropped_outside, report.clipped) == (6, 3, 3, 2)
    assert report.dropped_prompt_ids == (2, 3, 5)
    assert [p.prompt_id for p in kept] == [0, 1, 4]
    assert kept[0] is prompts[0]
    assert kept[1].box_l0_px == (900, 700, 1000, 800)
    assert kept[2].points_l0_px == ((5, 10),) and kept[2].point_labels == (1,)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept, report = validate_prompts(prompts[:1], W, H)
    assert report.dropped_outside == 0 and report.clipped == 0 and kept == prompts[:1]


def test_validate_errors():
    with pytest.raises(PromptError, match=r"prompt 3 of slide 's' \('z'\): zero-area box"):
        validate_prompts([Prompt("s", 3, box_l0_px=(10, 10, 10, 50), name="z")], 100, 100)
    with pytest.raises(PromptError, match="prompt 1 .*NaN"):
        validate_prompts([Prompt("s", 1, box_l0_px=(0, 0, math.nan, 5))], 100, 100)
    with pytest.raises(PromptError, match="prompt 2 .*NaN"):
        validate_prompts([Prompt("s", 2, points_l0_px=((math.nan, 1.0),), point_labels=(1,))], 100, 100)
    with pytest.raises(PromptError, match="no box and no positive point"):
        validate_prompts([Prompt("s", 0, points_l0_px=((1.0, 1.0),), point_labels=(0,))], 100, 100)


def test_plain_parquet_table_follows_csv_columns(tmp_path):
    import pandas as pd

    path = tmp_path / "table.parquet"
    pd.DataFrame({"x0": [1.0, None], "y0": [2.0, None], "x1": [3.0, None], "y1": [4.0, None],
                  "x": [None, 7.0], "y": [None, 8.0], "label": [None, 1]}).to_parquet(path)
    box, point = read_prompts(path, slide_id="s")["s"]
    assert box.box_l0_px == (1, 2, 3, 4) and box.points_l0_px == ()
    assert point.box_l0_px is None and point.points_l0_px == ((7, 8),) and point.point_labels == (1,)


def test_cohort_file_with_one_slide_names_unknown_slide_ids(tmp_path):
    """A cohort file given with ONE slide: ids the cohort does not have are an error (they were
    silently skipped), naming the file and the ids; a file naming only that slide is fine."""
    from engine.api import load_prompts
    from engine.slides import SlideInfo

    one = [SlideInfo("A", "/nowhere/A.svs", 1000, 1000, 0.5)]
    path = tmp_path / "cohort.csv"
    path.write_text("slide_id,x0,y0,x1,y1\nA,0,0,10,10\nZZZ,0,0,10,10\nA,5,5,9,9\nQ,1,1,2,2\n")
    for call in (lambda: load_prompts(path, one), lambda: read_prompts(path, slide_id="A", known_slide_ids=["A"])):
        with pytest.raises(PromptFileError, match=r"cohort\.csv: .*2 unknown slide id\(s\): \['Q', 'ZZZ'\]"):
            call()
    assert [p.box_l0_px for p in read_prompts(path, slide_id="A")["A"]] == [(0, 0, 10, 10), (5, 5, 9, 9)]
    path.write_text("slide_id,x0,y0,x1,y1\nA,0,0,10,10\n,5,5,9,9\n")  # an empty cell means "this slide"
    assert len(load_prompts(path, one)["A"]) == 2
    geo = tmp_path / "cohort.geojson"
    geo.write_text(json.dumps([feature(rect(0, 0, 5, 5), slide_id="A"), feature(rect(0, 0, 5, 5), slide_id="B")]))
    with pytest.raises(PromptFileError, match=r"cohort\.geojson: .*unknown slide id\(s\): \['B'\]"):
        load_prompts(geo, one)


@pytest.mark.parametrize("geometry, where", [
    ({"type": "Polygon", "coordinates": [[[0, 0], [math.nan, 0], [10, 10], [0, 10], [0, 0]]]}, "Polygon"),
    ({"type": "Polygon", "coordinates": [[[math.nan, 0], [10, 0], [10, 10], [0, 10], [math.nan, 0]]]}, "Polygon"),
    ({"type": "MultiPolygon", "coordinates": [[[[0, 0], [9, 0], [9, 9], [0, math.inf], [0, 0]]]]}, "MultiPolygon"),
    ({"type": "Point", "coordinates": [math.inf, 3]}, "Point"),
    ({"type": "MultiPoint", "coordinates": [[1, 2], [math.nan, 3]]}, "MultiPoint"),
])
def test_non_finite_coordinates_are_named(tmp_path, geometry, where):
    """A NaN vertex used to read as 'LinearRing not closed' (first vertex) or, in the middle of
    a ring, to shrink the box silently (shapely's bounds skip NaN)."""
    path = tmp_path / "nan.geojson"
    path.write_text(json.dumps([feature(rect(0, 0, 5, 5)), feature(geometry)]))  # json writes NaN/Infinity
    with pytest.raises(PromptFileError, match=rf"nan\.geojson: feature 1: non-finite coordinate .* in {where}$"):
        read_prompts(path, slide_id="s")


def test_non_finite_and_non_numeric_coordinates_in_other_formats(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Polygon

    path = tmp_path / "nan.parquet"
    gdf = gpd.GeoDataFrame({"slide_id": ["s", "s"]}, crs=None,
                           geometry=[Polygon([(0, 0), (5, 0), (5, 5)]), Polygon([(0, 0), (math.nan, 0), (9, 9)])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # shapely warns about the NaN it is given
        gdf.to_parquet(path)
        with pytest.raises(PromptFileError, match=r"nan\.parquet: row 1: non-finite coordinate \(nan, 0.0\)"):
            read_prompts(path)
    csv_path = tmp_path / "inf.csv"
    csv_path.write_text("x0,y0,x1,y1\n0,0,5,5\n0,0,inf,5\n")
    with pytest.raises(PromptFileError, match=r"inf\.csv: line 3: column 'x1' is 'inf': non-finite coordinate"):
        read_prompts(csv_path, slide_id="s")
    text = tmp_path / "text.geojson"
    text.write_text(json.dumps([feature({"type": "Point", "coordinates": ["12", 3]})]))
    with pytest.raises(PromptFileError, match=r"text\.geojson: feature 0: Point coordinate '12' is not a number"):
        read_prompts(text, slide_id="s")


def test_empty_prompt_files_give_no_prompts(tmp_path):
    """No features / rows: no prompts, no error (``{slide: []}`` for one slide, ``{}`` for a cohort)."""
    import geopandas as gpd
    import pandas as pd

    from engine.api import load_prompts
    from engine.slides import SlideInfo

    files = {
        "fc.geojson": json.dumps({"type": "FeatureCollection", "features": []}),
        "list.geojson": "[]",
        "header.csv": "slide_id,x0,y0,x1,y1\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    pd.DataFrame({"x0": [], "y0": [], "x1": [], "y1": []}).to_parquet(tmp_path / "table.parquet")
    gpd.GeoDataFrame({"slide_id": []}, geometry=[], crs=None).to_parquet(tmp_path / "geo.parquet")
    infos = [SlideInfo(s, f"/nowhere/{s}.svs", 1000, 1000, 0.5) for s in ("A", "B")]
    for name in [*files, "table.parquet", "geo.parquet"]:
        assert read_prompts(tmp_path / name, slide_id="A") == {"A": []}, name
        assert read_prompts(tmp_path / name) == {}, name
        assert load_prompts(tmp_path / name, infos[:1]) == {"A": []}, name
        assert load_prompts(tmp_path / name, infos) == {}, name
