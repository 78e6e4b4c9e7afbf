"""The one provenance record: built, written and read back in one place, and refused when damaged."""

from __future__ import annotations

import json

import pytest

import napari_clipseg as ncs
from napari_clipseg.io.records import SCHEMA_VERSION, class_names, sidecar_path


def test_round_trip_through_a_file(tiny_model, tmp_path):
    options = ncs.SegmentOptions(mode="tiled", threshold=(0.3, 0.5), planes=[(1,)])
    record = ncs.build_record(
        ["nucleus", "membrane"],
        model=tiny_model,
        options=options,
        mode="tiled",
        image={"name": "stack.tif", "shape": [3, 64, 64]},
        planes=[(1,)],
        files={"labels": "l.tif"},
    )
    path = ncs.write_record(sidecar_path(tmp_path / "l.tif"), record)
    assert path.name == "l.tif.json"
    back = ncs.read_record(path)
    assert back == json.loads(json.dumps(record))
    assert back["schema_version"] == SCHEMA_VERSION and class_names(back) == ["nucleus", "membrane"]
    assert ncs.SegmentOptions.from_dict(back["options"]) == options
    assert back["model"]["kind"] == "random" and back["model"]["precision"] == "float32"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("classes"), "lacks the field 'classes'"),
        (lambda r: r.update(schema="something else"), "not a napari-clipseg record"),
        (lambda r: r.update(schema_version=SCHEMA_VERSION + 1), "update it"),
        (lambda r: r.update(edited="yes"), "'edited' has the wrong type"),
        (lambda r: r.update(classes=[{"value": 2, "name": "a"}]), "values 1..N"),
        (lambda r: r.update(classes=[{"value": 1}]), "values 1..N"),
    ],
)
def test_damaged_records_are_refused_with_the_file_name(change, message, tmp_path):
    record = ncs.build_record(["a"])
    change(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ncs.RecordError, match=message) as info:
        ncs.read_record(path)
    assert "bad.json" in str(info.value)


def test_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"\x00\x01 not json")
    with pytest.raises(ncs.RecordError, match=r"x.json is not valid JSON"):
        ncs.read_record(path)
