"""Openclipart as Debian ships it (packages openclipart-png and openclipart-svg).

The PNGs are the images; each maps 1:1 by relative path to an SVG whose RDF metadata block
holds the title, creator, keywords, description and licence.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from hibt.indexer.records import Record

NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc_old": "http://web.resource.org/cc/",
    "cc": "http://creativecommons.org/ns#",
}
RDF_RESOURCE = f"{{{NS['rdf']}}}resource"
LICENSE_NAMES = {
    "http://web.resource.org/cc/PublicDomain": "Public Domain",
    "http://creativecommons.org/licenses/publicdomain/": "Public Domain",
    "http://creativecommons.org/publicdomain/zero/1.0/": "CC0 1.0",
}


def read_rdf_block(svg: Path) -> ET.Element | None:
    """Parse only up to the end of <metadata>: some SVGs are tens of MB of paths."""
    try:
        for event, elem in ET.iterparse(svg, events=("end",)):
            if elem.tag.endswith("}RDF") or elem.tag == "RDF":
                return elem
            if event == "end" and elem.tag.endswith("}metadata"):
                return None
    except (ET.ParseError, OSError, UnicodeDecodeError):
        return None
    return None


PERL_JUNK = re.compile(r"^hash(\(0x[0-9a-f]+\))?$", re.IGNORECASE)


def text_of(elem: ET.Element | None) -> str:
    """Whitespace-normalised text; drops the ``HASH(0x...)`` leftovers of a Perl exporter."""
    text = " ".join((elem.text or "").split()) if elem is not None else ""
    return "" if PERL_JUNK.match(text) else text


def parse_svg_metadata(svg: Path) -> dict[str, str]:
    """Title, artist, keywords, description and licence from an SVG's RDF (empty if none)."""
    rdf = read_rdf_block(svg)
    if rdf is None:
        return {}
    work = rdf.find("cc_old:Work", NS)
    if work is None:
        work = rdf.find("cc:Work", NS)
    if work is None:
        return {}
    creator = work.find("dc:creator/*/dc:title", NS)
    keywords = [text_of(li) for li in work.findall("dc:subject/rdf:Bag/rdf:li", NS)]
    keywords = [k for k in keywords if k and k.lower() not in {"unsorted", "hash"}]
    license_elem = work.find("cc_old:license", NS)
    if license_elem is None:
        license_elem = work.find("cc:license", NS)
    license_url = license_elem.get(RDF_RESOURCE, "") if license_elem is not None else ""
    return {
        "title": text_of(work.find("dc:title", NS)),
        "artist": text_of(creator),
        "description": text_of(work.find("dc:description", NS)),
        "keywords": ", ".join(keywords),
        "license": LICENSE_NAMES.get(license_url, license_url),
    }


def caption_for(meta: dict[str, str], rel: str) -> str:
    title = meta.get("title") or Path(rel).stem.replace("_", " ")
    description = meta.get("description", "")
    return f"{title}. {description}" if description and description != title else title


class OpenclipartDataset:
    def __init__(self, path: Path, name: str | None = None) -> None:
        self.png_root, self.svg_root = self.roots(path)
        self.name = name or "openclipart"

    @staticmethod
    def roots(path: Path) -> tuple[Path, Path]:
        base = path.parent if path.name == "png" else path
        return base / "png", base / "svg"

    @classmethod
    def accepts(cls, path: Path) -> bool:
        png, svg = cls.roots(path)
        return png.is_dir() and svg.is_dir()

    def png_paths(self) -> list[Path]:
        return sorted(p for p in self.png_root.rglob("*.png") if p.is_file())

    def estimated_size(self) -> int | None:
        return len(self.png_paths())

    def __iter__(self) -> Iterator[Record]:
        return map(self.record, self.png_paths())

    def record(self, png: Path) -> Record:
        rel = png.relative_to(self.png_root).as_posix()
        meta = parse_svg_metadata((self.svg_root / rel).with_suffix(".svg"))
        return Record(
            dataset=self.name,
            key=rel,
            source=f"openclipart/{rel}",
            caption=caption_for(meta, rel),
            title=meta.get("title", ""),
            artist=meta.get("artist", ""),
            license=meta.get("license", "") or "Public Domain",
            keywords=meta.get("keywords", ""),
            path=png,
        )

    def units(self, size: int) -> list[tuple[Path, ...]]:
        """The drawings in order, ``size`` at a time: units of work for a cluster."""
        paths = self.png_paths()
        return [tuple(paths[at : at + size]) for at in range(0, len(paths), size)]

    def read(self, unit: tuple[Path, ...]) -> Iterator[Record]:
        return map(self.record, unit)
