"""Each dataset reader on data the test writes itself."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hibt.errors import DatasetError
from hibt.indexer.datasets import open_dataset
from hibt.indexer.datasets.folder import FolderDataset
from hibt.indexer.datasets.openclipart import OpenclipartDataset, parse_svg_metadata
from hibt.indexer.datasets.webdataset import WebDataset
from tests.datagen import drawing, save

SVG = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://web.resource.org/cc/"
     xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" width="10" height="10">
  <metadata>
    <rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>Sleeping  Cat</dc:title>
        <dc:description>A cat asleep on a cushion</dc:description>
        <dc:subject><rdf:Bag><rdf:li>cat</rdf:li><rdf:li>HASH(0x85caca8)</rdf:li>
          <rdf:li>pets</rdf:li></rdf:Bag></dc:subject>
        <dc:creator><cc:Agent><dc:title>Zoë O'Brien</dc:title></cc:Agent></dc:creator>
        <cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <path d="M0 0 L10 10"/>
</svg>
"""


def test_openclipart_metadata_from_svg_rdf(tmp_path: Path) -> None:
    svg = tmp_path / "cat.svg"
    svg.write_text(SVG, encoding="utf-8")
    meta = parse_svg_metadata(svg)
    assert meta["title"] == "Sleeping Cat"
    assert meta["artist"] == "Zoë O'Brien"
    assert meta["keywords"] == "cat, pets"  # Perl HASH(...) leftovers dropped
    assert meta["license"] == "Public Domain"
    assert meta["description"] == "A cat asleep on a cushion"


def test_openclipart_tree_maps_png_to_svg(tmp_path: Path) -> None:
    (tmp_path / "png" / "animals").mkdir(parents=True)
    (tmp_path / "svg" / "animals").mkdir(parents=True)
    save(drawing(1, alpha=True), tmp_path / "png" / "animals" / "cat.png")
    (tmp_path / "svg" / "animals" / "cat.svg").write_text(SVG, encoding="utf-8")
    save(drawing(2), tmp_path / "png" / "animals" / "no_metadata_dog.png")
    ds = open_dataset(tmp_path)
    assert isinstance(ds, OpenclipartDataset)
    cat, dog = list(ds)
    assert (cat.key, cat.artist, cat.title) == ("animals/cat.png", "Zoë O'Brien", "Sleeping Cat")
    assert cat.caption == "Sleeping Cat. A cat asleep on a cushion"
    assert dog.caption == "no metadata dog" and dog.artist == ""  # a missing SVG is not fatal
    assert isinstance(open_dataset(tmp_path / "png"), OpenclipartDataset)


def test_openclipart_corrupt_svg_is_not_fatal(tmp_path: Path) -> None:
    svg = tmp_path / "bad.svg"
    svg.write_text("<svg><metadata><rdf:RDF>", encoding="utf-8")
    assert parse_svg_metadata(svg) == {}


def test_folder_sidecars_and_metadata_table(tmp_path: Path) -> None:
    for i in range(3):
        save(drawing(i), tmp_path / f"{i}.jpg")
    (tmp_path / "0.txt").write_text("caption from txt")
    (tmp_path / "1.json").write_text(json.dumps({"text": "caption from json", "author": "Ann"}))
    pq.write_table(
        pa.table(
            {
                "file_name": ["2.jpg", "0.jpg"],
                "caption": ["from parquet", "ignored"],
                "creator": ["Bo", "Cy"],
                "LICENSE": ["CC0", "CC-BY"],
            }
        ),
        tmp_path / "metadata.parquet",
    )
    records = {r.key: r for r in FolderDataset(tmp_path)}
    assert records["0.jpg"].caption == "caption from txt"  # sidecar wins over the table
    assert records["0.jpg"].artist == "Cy"
    assert (records["1.jpg"].caption, records["1.jpg"].artist) == ("caption from json", "Ann")
    assert (records["2.jpg"].caption, records["2.jpg"].license) == ("from parquet", "CC0")


def test_folder_metadata_csv(tmp_path: Path) -> None:
    save(drawing(5), tmp_path / "a.png")
    (tmp_path / "metadata.csv").write_text("file_name,caption,artist\na.png,csv caption,Di\n")
    (record,) = FolderDataset(tmp_path)
    assert (record.caption, record.artist) == ("csv caption", "Di")


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        with tarfile.open(shards / f"{s:05d}.tar", "w") as tar:
            for i in range(3):
                key = f"{s:05d}{i:04d}"
                buf = io.BytesIO()
                drawing(s * 10 + i).save(buf, format="JPEG")
                add(tar, f"{key}.jpg", buf.getvalue())
                add(tar, f"{key}.txt", f"caption {key}".encode())
                meta = {"url": f"https://example.com/{key}.jpg", "LICENSE": "CC-BY", "key": key}
                add(tar, f"{key}.json", json.dumps(meta).encode())
            add(tar, "orphan.txt", b"a caption without an image")
    ds = open_dataset(shards)
    assert isinstance(ds, WebDataset)
    records = list(ds)
    assert len(records) == 6
    first = records[0]
    assert first.caption == "caption 000000000"
    assert first.source == "https://example.com/000000000.jpg"
    assert first.license == "CC-BY" and first.data and first.data[:2] == b"\xff\xd8"
    assert len({r.id for r in records}) == 6
    assert isinstance(open_dataset(shards / "00001.tar"), WebDataset)


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    try:
        open_dataset(tmp_path / "nope")
    except DatasetError as exc:
        assert "does not exist" in str(exc)
    else:
        raise AssertionError("expected DatasetError")
