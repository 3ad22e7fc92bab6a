"""On-disk layout and OME-NGFF metadata of a slide's ``labels.ome.zarr``.

Layout (NGFF requires ``labels/`` to sit inside an image group)::

    labels.ome.zarr/            root image "coverage": uint8 (y, x), 255 where any object, else 0
      0 .. n-1                  its pyramid, same grid as the label pyramid (so viewers overlay
                                the two 1:1); chunks without objects are never written
      labels/                   {"labels": ["objects"]}
        objects/                multiscales + "image-label" (colors, properties, source)
          0 .. n-1              uint32 (y, x) object ids, 0 = background

Axes ``y, x`` of type space with unit micrometer; level ``k`` has scale
``label_mpp * 2**k`` on both axes and no translation (as ome-zarr-py writes it).

NGFF 0.5 is written on zarr v3 (attributes under ``"ome"``, ``dimension_names`` y, x); NGFF 0.4 on
zarr v2 with ``/`` chunk separator and Blosc (what Bio-Formats / QuPath and tiatoolbox read).
Metadata goes through ome-zarr-py's writer functions. One fix-up: ome-zarr-py 0.18 writes no
``version`` into the ``labels/`` group's ``ome`` attributes for 0.5, which the 0.5 schema requires
(ome-zarr-models rejects it), so it is added here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import zarr
from ome_zarr.format import Format, FormatV04, FormatV05
from ome_zarr.writer import add_metadata, write_label_metadata, write_multiscales_metadata

NgffVersion = Literal["0.4", "0.5"]
AXES: list[dict[str, str]] = [
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]


def ngff_format(version: NgffVersion) -> Format:
    if version == "0.5":
        return FormatV05()
    if version == "0.4":
        return FormatV04()
    raise ValueError(f"ngff_version must be '0.4' or '0.5', got {version!r}")


@dataclass
class NgffArrays:
    """The open groups and per-level arrays of one labels.ome.zarr."""

    root: zarr.Group
    labels_group: zarr.Group
    label_group: zarr.Group
    label_levels: list[zarr.Array]  # uint32
    coverage_levels: list[zarr.Array]  # uint8


def _array_kwargs(fmt: Format) -> dict[str, Any]:
    if fmt.zarr_format == 2:
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return {"dimension_names": ["y", "x"]}


def create_arrays(
    store_path: str,
    fmt: Format,
    shapes: list[tuple[int, int]],
    chunk_px: int,
    label_name: str,
) -> NgffArrays:
    """Create the (empty) groups and arrays; nothing is written into the chunks."""
    root = zarr.open_group(zarr.storage.LocalStore(store_path), mode="w", zarr_format=fmt.zarr_format)
    labels_group = root.create_group("labels")
    label_group = labels_group.create_group(label_name)
    kw = _array_kwargs(fmt)
    chunks = (chunk_px, chunk_px)
    label_levels = [
        label_group.create_array(str(k), shape=s, chunks=chunks, dtype="uint32", fill_value=0, **kw)
        for k, s in enumerate(shapes)
    ]
    coverage_levels = [
        root.create_array(str(k), shape=s, chunks=chunks, dtype="uint8", fill_value=0, **kw)
        for k, s in enumerate(shapes)
    ]
    return NgffArrays(root, labels_group, label_group, label_levels, coverage_levels)


def datasets(n_levels: int, label_mpp: float) -> list[dict[str, Any]]:
    return [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [label_mpp * 2**k] * 2}]}
        for k in range(n_levels)
    ]


def write_metadata(
    arrays: NgffArrays,
    fmt: Format,
    label_mpp: float,
    label_name: str,
    colors: list[dict[str, Any]],
    properties: list[dict[str, Any]],
) -> None:
    """Write multiscales (root and label) and image-label metadata.

    colors: [{"label-value": int, "rgba": [r, g, b, a]}]; properties: [{"label-value": int, ...}];
    both must name the same label values (the schema requires it).
    """
    ds = datasets(len(arrays.label_levels), label_mpp)
    write_multiscales_metadata(arrays.root, ds, fmt=fmt, axes=AXES, name="coverage")
    write_multiscales_metadata(arrays.label_group, ds, fmt=fmt, axes=AXES, name=label_name)
    write_label_metadata(
        arrays.labels_group,
        label_name,
        colors=colors,
        properties=properties,
        fmt=fmt,
        source={"image": "../../"},
    )
    if fmt.zarr_format == 3:
        add_metadata(arrays.labels_group, {"version": fmt.version}, fmt=fmt)
