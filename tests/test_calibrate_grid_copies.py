"""The grid rules' calibration script: it counts the copies a rule loses and the siblings it
takes, by verifying with a threshold at its value and at another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hibt.indexer.copies import verify
from scripts import calibrate_grid_copies as calibrate
from tests.test_copies import shaded_bar, tablet


def test_a_rule_that_refuses_every_unedited_copy_loses_them_and_takes_the_sibling(
    tmp_path: Path, monkeypatch
) -> None:
    """With LOCAL_MAX at 0 every copy whose levels were left as they were is lost (against
    inf); at its value none is, and the shaded sibling is taken either way round only by
    the rule. The constant is put back after each comparison."""
    shaded_bar((1.0, 0.8, 0.5)).save(tmp_path / "bar.png")
    shaded_bar((1.0, 0.8, 0.5), 16).save(tmp_path / "shaded.png")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# a sibling\nsha\tsha\tsibling\tbar.png\tshaded.png\n")
    files = [tmp_path / "bar.png"]

    def lost() -> dict[str, bool]:
        return {
            n: refused
            for n, path, refused in calibrate.copies_lost(files, "LOCAL_MAX", np.inf)
            if path
        }

    assert not any(lost().values())
    taken = list(calibrate.siblings_taken(tmp_path, pairs, "LOCAL_MAX", np.inf))
    assert [t for *_, t in taken] == [True, True]
    monkeypatch.setattr(verify, "LOCAL_MAX", 0.0)
    found = lost()
    assert found["as it is"] and found["saturation 1.4"] and not found["brightness 1.15"]
    assert verify.LOCAL_MAX == 0.0


def test_a_larger_file_is_uploaded_shrunk_and_a_rule_is_tried_at_another_value(
    tmp_path: Path,
) -> None:
    """A file larger than a thumbnail, kept losslessly, is drawn too (its copies uploaded
    shrunk as the build shrinks them); ``at`` tries the rule at another value than
    verify.py's and puts it back."""
    big = shaded_bar((1.0, 0.8, 0.5)).resize((720, 480), Image.Resampling.NEAREST)
    big.save(tmp_path / "big.png")
    assert calibrate.on_its_grid(big).size == (256, 171)
    value = verify.LOCAL_MAX
    found = {
        n: refused
        for n, path, refused in calibrate.copies_lost(
            [tmp_path / "big.png"], "LOCAL_MAX", np.inf, 0.0
        )
        if path
    }
    assert found["as it is"] and not found["brightness 1.15"]
    assert value == verify.LOCAL_MAX


def test_an_edited_copy_passes_and_is_lost_to_a_rule_that_calls_it_another_picture(
    tmp_path: Path,
) -> None:
    """A copy with a caption laid over passes as an edit of its picture; a rule that calls
    every edit a part recoloured (RECOLOURED_MAX at 0) loses it, and at its value does not."""
    tablet((55, 55, 55)).save(tmp_path / "tablet.png")

    def lost(at: float | None) -> dict[str, bool]:
        found = calibrate.copies_lost([tmp_path / "tablet.png"], "RECOLOURED_MAX", np.inf, at)
        return {n: refused for n, path, refused in found if path}

    assert "caption" in lost(None) and not lost(None)["caption"]
    assert lost(0.0)["caption"]
