"""The copy benchmark's split: by file identity only, so it cannot be shaped by the engine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from hibt.indexer.records import Record

ROOT = Path(__file__).resolve().parent.parent


def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_copy_detection", ROOT / "scripts" / "bench_copy_detection.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_identical_bytes_stay_together_and_nothing_else_decides() -> None:
    """Every file is stored twice under two keys: both keys fall on the same side and in the
    same half. Two seeds give two different held-out sets, each cut into a calibration
    half and a report half."""
    b = bench()
    records = []
    for i in range(400):
        data = b"picture %d" % i
        records += [Record("d", f"a/{i}", "", data=data), Record("d", f"b/{i}", "", data=data)]
    held = b.split(records, 0.2, seed=0)
    for i in range(400):
        assert (f"a/{i}" in held) == (f"b/{i}" in held)
        assert held.get(f"a/{i}") == held.get(f"b/{i}")
    pictures = {k.split("/")[1] for k in held}
    assert 40 < len(pictures) < 120 and set(held.values()) == {"calibrate", "report"}
    assert {k.split("/")[1] for k in b.split(records, 0.2, seed=1)} != pictures


def labeller():
    spec = importlib.util.spec_from_file_location(
        "label_copy_pairs", ROOT / "scripts" / "label_copy_pairs.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its worker processes find main's functions by name
    spec.loader.exec_module(module)
    return module


def test_the_pixel_rule_labels_a_mirrored_moved_copy_and_not_a_changed_detail(
    tmp_path: Path,
) -> None:
    """The labelling rule sees pixels alone: a drawing mirrored and moved along a wider
    canvas is a copy, the same drawing with one mark added is not, nor with a dot so small
    that the mean over the whole picture hides it (a tear on a smiley)."""
    from PIL import Image, ImageDraw, ImageOps

    lab = labeller()
    drawing = Image.new("RGB", (120, 80), "white")
    pen = ImageDraw.Draw(drawing)
    pen.polygon([(10, 40), (50, 10), (50, 25), (110, 25), (110, 55), (50, 55), (50, 70)], "teal")
    pen.line([(10, 40), (50, 10), (50, 25), (110, 25)], "black", 3)
    canvas = Image.new("RGB", (180, 80), "white")
    canvas.paste(ImageOps.mirror(drawing), (45, 0))
    marked, tear = drawing.copy(), drawing.copy()
    ImageDraw.Draw(marked).ellipse((70, 32, 82, 44), "orange")
    ImageDraw.Draw(tear).ellipse((90, 36, 95, 43), "navy")
    for name, image in (("a", drawing), ("b", canvas), ("c", marked), ("d", tear)):
        image.save(tmp_path / f"{name}.png")
    first, moved, changed, dotted = (lab.picture(tmp_path / f"{n}.png") for n in "abcd")
    mean, local = lab.pixel_distance(first, moved)
    assert mean < lab.COPY_MAX and local < lab.LOCAL_MAX
    assert lab.pixel_distance(first, changed)[0] > lab.COPY_MAX
    mean, local = lab.pixel_distance(first, dotted)
    assert mean < lab.COPY_MAX and local > lab.LOCAL_MAX


def test_the_pixel_rule_allows_a_copiers_tone_edit_and_not_another_colouring(
    tmp_path: Path,
) -> None:
    """A drawing on a clear ground darkened, faded or made grey by a common tool (709 luma, or
    HSL lightness as Photoshop's Desaturate makes it) is a copy; the same drawing in another
    hue, or stretched into black and white, is not."""
    from PIL import Image, ImageDraw, ImageEnhance

    lab = labeller()
    drawing = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    pen = ImageDraw.Draw(drawing)
    pen.ellipse((10, 10, 110, 70), (200, 40, 60, 255), "black", 3)
    pen.rectangle((40, 30, 80, 50), (250, 220, 60, 255))
    rgb, alpha = drawing.convert("RGB"), drawing.getchannel("A")
    grey = rgb.convert("L", (0.2126, 0.7152, 0.0722, 0))
    swapped = Image.merge("RGB", (*reversed(rgb.split()),))
    variants = {
        "darker": ImageEnhance.Brightness(rgb).enhance(0.55),
        "faded": ImageEnhance.Contrast(ImageEnhance.Color(rgb).enhance(0.6)).enhance(0.5),
        "grey": grey.convert("RGB"),
        "lightness": Image.fromarray(np.uint8(lab.lightness(np.asarray(rgb, np.float32)))),
        "hue": swapped,
        "threshold": grey.point(lambda v: 255 if v > 110 else 0).convert("RGB"),
    }
    drawing.save(tmp_path / "drawing.png")
    first = lab.picture(tmp_path / "drawing.png")
    for name, colours in variants.items():
        colours.putalpha(alpha)
        colours.save(tmp_path / f"{name}.png")
        mean, local = lab.pixel_distance(first, lab.picture(tmp_path / f"{name}.png"))
        copy = mean < lab.COPY_MAX and local < lab.LOCAL_MAX
        assert copy == (name in ("darker", "faded", "grey", "lightness")), (name, mean, local)


def test_the_pixel_rule_finds_a_ground_brightened_to_white_and_no_margin_dilutes_it(
    tmp_path: Path,
) -> None:
    """A card on a cream ground brightened until the ground clips to white is a copy (a
    brightness a least-squares tone fit misses); the card on a blue ground is not, nor orange
    stripes against yellow ones, although a brightness of 1.55 clips the one into the other
    (a hue turned). Two small different marks in the middle of one large empty canvas stay
    apart: files of one size are also compared without a trim, but cut to the box of what
    they show."""
    from PIL import Image, ImageDraw, ImageEnhance

    lab = labeller()
    card = Image.new("RGB", (140, 190), (250, 236, 200))
    pen = ImageDraw.Draw(card)
    pen.rounded_rectangle((8, 8, 131, 181), 12, None, (60, 40, 20), 3)
    pen.polygon([(70, 20), (90, 50), (50, 50)], (200, 30, 30))
    blue = card.copy()
    ImageDraw.Draw(blue).rectangle((12, 60, 127, 177), (200, 220, 250))
    dot, flower = (Image.new("RGBA", (128, 128), (0, 0, 0, 0)) for _ in range(2))
    ImageDraw.Draw(dot).ellipse((54, 54, 74, 74), (140, 180, 150, 255))
    petals = [(64 + 11 * np.cos(a), 64 + 11 * np.sin(a)) for a in np.linspace(0, 6.28, 17)]
    ImageDraw.Draw(flower).polygon(
        [
            p if i % 2 else (64 + (p[0] - 64) * 0.7, 64 + (p[1] - 64) * 0.7)
            for i, p in enumerate(petals)
        ],
        (140, 180, 150, 255),
    )
    ImageDraw.Draw(flower).point((64, 64), (0, 0, 0, 255))
    orange, yellow = (Image.new("RGB", (100, 100), colour) for colour in ("#ffa500", "#ffff00"))
    for stripes in (orange, yellow):
        for x in range(-100, 100, 28):
            ImageDraw.Draw(stripes).polygon(
                [(x, 100), (x + 14, 100), (x + 114, 0), (x + 100, 0)], "black"
            )
    files = {"cream": card, "white": ImageEnhance.Brightness(card).enhance(1.2), "blue": blue}
    files |= {"orange": orange, "yellow": yellow}
    for name, image in {**files, "dot": dot, "flower": flower}.items():
        image.save(tmp_path / f"{name}.png")
    copy = lab.distance(tmp_path / "cream.png", tmp_path / "white.png")
    assert copy[0] < lab.COPY_MAX and copy[1] < lab.LOCAL_MAX
    assert lab.distance(tmp_path / "cream.png", tmp_path / "blue.png")[0] > lab.COPY_MAX
    assert lab.distance(tmp_path / "orange.png", tmp_path / "yellow.png")[0] > lab.COPY_MAX
    assert lab.distance(tmp_path / "dot.png", tmp_path / "flower.png")[0] > lab.COPY_MAX


def test_the_pixel_rule_registers_a_mirror_rendered_a_fraction_of_a_pixel_off(
    tmp_path: Path,
) -> None:
    """One drawing rendered twice, mirrored about an axis a quarter pixel off the canvas's
    centre (two tab icons of one theme), differs only in antialiasing: a copy. The drawing
    with its tip moved by a pixel and a half is not, shifted as it may be."""
    from PIL import Image, ImageDraw, ImageOps

    lab = labeller()
    scale = 8  # rendered at 8x and reduced: antialiased as a rasteriser would

    def tab(left: float, tip: float = 0.0) -> Image.Image:
        big = Image.new("RGB", (60 * scale, 60 * scale), "white")
        points = [(left, 12), (left + 17.4 + tip, 30.6), (left, 48.4)]
        ImageDraw.Draw(big).polygon(
            [(x * scale, y * scale) for x, y in points], (128, 128, 128), (51, 51, 51), 3 * scale
        )
        return big.resize((60, 60), Image.Resampling.BOX)

    files = {
        "right": tab(21.4),
        "left": ImageOps.mirror(tab(21.4 - 0.25)),
        "longer": ImageOps.mirror(tab(21.4 - 0.25, tip=1.5)),
    }
    for name, image in files.items():
        image.save(tmp_path / f"{name}.png")
    mean, local = lab.distance(tmp_path / "right.png", tmp_path / "left.png")
    assert mean < lab.COPY_MAX and local < lab.LOCAL_MAX
    mean, local = lab.distance(tmp_path / "right.png", tmp_path / "longer.png")
    assert mean >= lab.COPY_MAX or local >= lab.LOCAL_MAX


def test_the_check_prints_the_labels_the_pixels_contradict_in_the_lists_order(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """``--check`` measures the committed list on worker processes and prints, in the list's
    order, each label the pixels contradict: a copy called a sibling, a sibling called a
    copy; not a label they agree with, nor one the eye gave (``eye``)."""
    from PIL import Image, ImageDraw, ImageOps

    lab = labeller()
    drawing = Image.new("RGB", (120, 80), "white")
    ImageDraw.Draw(drawing).polygon([(10, 40), (50, 10), (110, 25), (110, 55), (50, 70)], "teal")
    marked = drawing.copy()  # a dot the mean hides and one place does not
    ImageDraw.Draw(marked).ellipse((90, 36, 95, 43), "navy")
    drawing.save(tmp_path / "a.png")
    ImageOps.mirror(drawing).save(tmp_path / "b.png")
    marked.save(tmp_path / "c.png")
    rows = [
        ("1", "2", "sibling", "a.png", "b.png", ""),  # a mirror image: contradicted
        ("1", "3", "sibling", "a.png", "c.png", ""),  # a dot added: agreed
        ("2", "3", "copy", "b.png", "c.png", ""),  # contradicted by one place
        ("1", "4", "copy", "a.png", "c.png", "eye"),  # the eye's: not checked
    ]
    listed = tmp_path / "pairs.tsv"
    listed.write_text("# header\n" + "".join("\t".join(r).rstrip() + "\n" for r in rows))
    sheets = tmp_path / "sheets"
    argv = ["x", str(tmp_path), str(listed), "--check", "--jobs", "2", "--sheets", str(sheets)]
    monkeypatch.setattr("sys.argv", argv)
    lab.main()
    printed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(p[2], p[3], p[4], p[5]) for p in printed] == [
        ("copy", "sibling", "a.png", "b.png"),
        ("look", "copy", "b.png", "c.png"),
    ]
    # Drawn for the eye in the same order: the mirror image laid on the drawing leaves its
    # difference white; the dot shows.
    (sheet,) = sheets.iterdir()
    drawn = np.asarray(Image.open(sheet).convert("L"), np.float32)
    row, panel = lab.SHEET_SIDE + 16 + 8, lab.SHEET_SIDE + 8
    differences = [drawn[r * row + 16 : r * row + row - 8, 2 * panel :] for r in range(2)]
    assert drawn.shape[0] == 2 * row
    assert differences[0].min() > 240 and differences[1].min() < 200
    wide = tmp_path / "wide.png"  # of another shape: drawn as it is, with no difference
    drawing.resize((240, 60)).save(wide)
    alone = np.asarray(lab.sheet_row(tmp_path / "a.png", wide, "").convert("L"))
    assert alone[16:, 2 * panel :].min() == 255 and alone[16:, :panel].min() < 200


def test_a_finished_run_is_judged_again_under_new_labels(tmp_path: Path, capsys) -> None:
    """Every claimed copy is kept, so that a pair labelled again (a copy found to be a
    sibling) counts in an old run's figures: one row per picture and transformation, in the
    totals and in each pair's count (a picture kept as two identical files is one row)."""
    b = bench()
    claims = [
        ("identity", "h1", "s1", "a.png", "b.png"),
        ("identity", "h1", "s1", "a.png", "other/b.png"),  # the same picture, kept twice
        ("identity", "h1", "s2", "a.png", "c.png"),
        ("hflip", "h1", "s1", "a.png", "b.png"),
        ("identity", "h2", "s3", "d.png", "e.png"),
    ]
    (tmp_path / "claimed_copies.tsv").write_text(
        "".join(f"{t}\t{h}\t{s}\tnear_copy\t0.99\t/x/{p}\t/x/{q}\n" for t, h, s, p, q in claims)
    )
    # Four pictures queried under two transformations; h1 and h2 met indexed files as they are.
    (tmp_path / "queried.tsv").write_text(
        "# identity|hflip\nh1\ta.png\ts1,s2\nh2\td.png\ts3\nh3\tf.png\t\nh4\tg.png\t\n"
    )
    copies = {frozenset(("h1", "s1")): "copy", frozenset(("h2", "s3")): "copy"}
    b.recount(tmp_path, copies)
    out = capsys.readouterr().out
    assert "1 rows (identity: 1)" in out
    assert "1 of 8 (12.5%); 1 of 2 (50.0%) among the 1 pictures with a close sibling" in out
    copies[frozenset(("h1", "s1"))] = "sibling"
    copies[frozenset(("h1", "s2"))] = "copy"
    copies[frozenset(("h2", "s3"))] = "sibling"
    b.recount(tmp_path, copies)
    out = capsys.readouterr().out
    assert "3 rows (identity: 2, hflip: 1)" in out and "2  a.png  claimed as  b.png" in out
    assert "3 of 8 (37.5%); 3 of 4 (75.0%) among the 2 pictures with a close sibling" in out
    only_flipped = lambda name, held, claimed: name == "hflip" and claimed.name == "b.png"  # noqa: E731
    b.recount(tmp_path, copies, only_flipped)
    out = capsys.readouterr().out
    assert "judged on the uploads: 1 rows show the claimed picture as well" in out
    assert "2 of 8 (25.0%); 2 of 4 (50.0%) among the 2 pictures with a close sibling" in out


def test_the_table_and_the_recount_read_the_same_labels() -> None:
    """A held-out picture's claim of a file labelled its copy is no false copy in the table,
    whether or not the two meet untransformed (a copy turned a quarter need not), just as the
    recount reads it: by the label alone, either way round; a sibling's claim is false."""
    b = bench()
    pairs = {
        frozenset(("h1", "s1")): "copy",
        frozenset(("s2", "h1")): "copy",
        frozenset(("h1", "s3")): "sibling",
        frozenset(("h2", "s1")): "copy",
    }
    copies = b.labelled_copies(pairs)
    assert copies["h1"] == {"s1", "s2"} and copies["s1"] == {"h1", "h2"}
    for held, stored in [("h1", "s1"), ("h1", "s2"), ("h1", "s3"), ("h2", "s1"), ("h3", "s1")]:
        false_in_table = stored not in copies.get(held, ())
        assert false_in_table == (pairs.get(frozenset((held, stored))) != "copy")


def test_an_upload_shows_the_claimed_picture_only_where_their_difference_survives(
    tmp_path: Path, monkeypatch
) -> None:
    """Judged on the upload itself, two drawings that differ only near their edge are one
    picture once both are cut to their centre, and two pictures whole, shrunk, or in a
    window."""
    from PIL import Image, ImageDraw

    b = bench()
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # where shows_claimed finds the rule
    drawing = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(drawing).ellipse((50, 50, 150, 150), (30, 90, 160), "black", 4)
    marked = drawing.copy()
    ImageDraw.Draw(marked).rectangle((4, 4, 34, 34), (200, 40, 40))
    drawing.save(tmp_path / "a.png")
    marked.save(tmp_path / "b.png")
    held, claimed = tmp_path / "a.png", tmp_path / "b.png"
    assert b.shows_claimed("crop 60%", held, claimed)
    for name in ("identity", "crop 80%", "screenshot", "resize 50%"):
        assert not b.shows_claimed(name, held, claimed), name


def test_the_original_s_picture_is_found_first_in_a_file_labelled_its_copy(engine) -> None:
    """Recall@1 of the picture counts a first result that is a file labelled a copy of the
    original (its twin mirrored in another file), and no other file."""
    store, script = engine.index.store(), bench()
    first, other = (store.items([r["idx"]])[r["idx"]] for r in store.distinct_files()[:2])
    copies_of = {first["sha256"]: frozenset({other["sha256"]})}
    assert script.first_is_copy(store, other["id"], first["idx"], copies_of)
    assert not script.first_is_copy(store, other["id"], first["idx"], {})
    assert not script.first_is_copy(store, first["id"], other["idx"], copies_of)
