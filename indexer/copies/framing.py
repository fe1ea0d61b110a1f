"""Where the picture is: a flat frame, letterboxing or window chrome around an image is cut
away, so a padded copy, a screenshot or a framed repost meets the stored picture.

The same code trims stored images and uploads (see views.py), which is why an index built
by other code is not reused (fingerprint.code_digest). The cases each rule was made for
are in docs/copy-detection.md.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from hibt.indexer.copies.channels import channel_last

Box = tuple[int, int, int, int]  # top, left, bottom, right


def uniform_lines(
    values: np.ndarray, tolerance: int, colours: np.ndarray | None = None
) -> np.ndarray:
    """True for each row of ``values`` (rows, width, 3) that is one flat colour (and close to
    one of ``colours``, when given). A row's end pixels are left out: shrinking blends them
    with the frame cut away before, and that alone kept a screenshot's flat margins."""
    values = values[:, 1:-1] if values.shape[1] > 4 else values
    values = channel_last(values, 1)  # (lines, 3, width)
    spread = values.max(axis=2).astype(np.int16) - values.min(axis=2).astype(np.int16)
    flat = spread.max(axis=1) <= tolerance
    if colours is None:
        return flat
    mean = values.mean(axis=2)  # (lines, 3) against (colours, 3): within tolerance of one
    near = np.abs(mean[:, None, :] - colours[None, :, :]).max(axis=2).min(axis=1) <= tolerance
    return flat & near


# A line whose colours spread this far (0-255) is flat, in a picture that spans black to
# white; less in one of lower contrast (frame_tolerance()).
FRAME_TOLERANCE = 24
FAINT_TOLERANCE = 6  # for pictures drawn in lines too pale to stand out at the default
MIN_TRIMMED_SIDE = 8  # pixels: a smaller box is a speck, too small to identify
CHROME_SPREAD = 64  # frame colours this far apart (0-255) are window chrome or a mount
# Chrome is cut away at this tolerance, not the default: a picture's white edge on a light
# grey window (255 vs 236) would go with it.
CHROME_TOLERANCE = 12
EDGE = 1  # pixels around a picture's box that resampling blends with what surrounds it


def trim_borders(image: Image.Image) -> Image.Image:
    """Strip flat-coloured rows and columns from every edge: padding, letterboxing, a
    screenshot's title bar and margins, and the blank margin of the picture itself."""
    return cut(image, frame_box(np.asarray(image.convert("RGB"))))


def cut(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """``image`` inside ``box`` (top, left, bottom, right), or all of it for None."""
    return image if box is None else image.crop((box[1], box[0], box[3], box[2]))


def frame_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of what a flat frame holds, or None when there is nothing
    to keep (blank, or a speck). A picture that looks blank at :func:`frame_tolerance`
    (hair-thin pale lines) is tried again at :data:`FAINT_TOLERANCE`, so its frame still
    goes."""
    return unspecked(framed(pixels))


def unspecked(box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """``box``, or None when it is a speck (under :data:`MIN_TRIMMED_SIDE`)."""
    if box is None or min(box[2] - box[0], box[3] - box[1]) < MIN_TRIMMED_SIDE:
        return None
    return box


def framed(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """What :func:`frame_box` finds, specks included."""
    tolerance = frame_tolerance(pixels)
    box = content_box(pixels, tolerance)
    if box is None and tolerance > FAINT_TOLERANCE:
        box = content_box(pixels, FAINT_TOLERANCE)
    return box


def frame_tolerance(pixels: np.ndarray) -> int:
    """:data:`FRAME_TOLERANCE` scaled by the picture's own contrast, so a washed-out copy is
    trimmed to the same box as its original, as the descriptor is blind to such a change."""
    channels = (pixels[..., c] for c in range(pixels.shape[-1]))  # a plane at a time: channels.py
    spread = max(int(c.max()) - int(c.min()) for c in channels)
    return max(FAINT_TOLERANCE, round(FRAME_TOLERANCE * spread / 255))


def in_chrome(pixels: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """True when the frame around ``box`` closes on all four sides and has two or more
    colours: a title bar over margins, padding around a picture's own margin. No stored
    picture includes such chrome, but with it a screenshot looks like a window icon. The
    line next to the box is left out: it is the picture's own anti-aliased edge, blended
    with the frame, and alone it made a thick line on white look like a picture in chrome.
    A box within that line of the image's edge touches it: a flag outlined by a pixel, with
    a white margin beyond its outline, is no picture in a window."""
    top, left, bottom, right = box
    height, width = pixels.shape[:2]
    if min(top, left, height - bottom, width - right) <= EDGE:
        return False
    outside = np.ones((height, width), bool)
    outside[max(0, top - EDGE) : bottom + EDGE, max(0, left - EDGE) : right + EDGE] = False
    if outside.sum() == 0:
        return False
    frame = pixels[outside].astype(np.int16)
    return int((frame.max(axis=0) - frame.min(axis=0)).max()) > CHROME_SPREAD


def chrome_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of what window chrome holds: only lines of the colours
    on the upload's outer edge (title bar, margins) are cut, at a tolerance tight enough to
    keep a picture's own white or flat edge on a light grey window (trimming that would
    take a picture's flat blue field or white half with the chrome)."""
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colours = np.unique(edge, axis=0).astype(np.float64)
    return content_box(pixels, CHROME_TOLERANCE, colours)


def content_box(
    pixels: np.ndarray, tolerance: int, frame_colours: np.ndarray | None = None
) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) inside the flat frame, or None when all of it is flat.
    Rows and columns are tested in turn until nothing changes, so a title bar does not stop
    the side margins below it from being seen as flat. A frame around a flat page (a
    screenshot of a blank canvas) gives the page. With ``frame_colours``, only lines of one
    of those colours are frame (see :func:`chrome_box`)."""
    top, left, bottom, right = 0, 0, pixels.shape[0], pixels.shape[1]
    for step in range(4):
        box = pixels[top:bottom, left:right]
        rows = ~uniform_lines(box, tolerance, frame_colours)
        cols = ~uniform_lines(box.transpose(1, 0, 2), tolerance, frame_colours)
        if rows.sum() < 2 or cols.sum() < 2:
            if step == 0:
                return None
            return flat_page(box, (top, left, bottom, right), tolerance)
        new = (
            top + int(np.argmax(rows)),
            left + int(np.argmax(cols)),
            top + len(rows) - int(np.argmax(rows[::-1])),
            left + len(cols) - int(np.argmax(cols[::-1])),
        )
        if new == (top, left, bottom, right):
            break
        top, left, bottom, right = new
    return top, left, bottom, right


def flat_page(box: np.ndarray, at: tuple[int, int, int, int], tolerance: int):
    """The box ``at`` (pixels ``box``) without its outer runs of flat colour: what a frame
    holds when the content inside is flat (stripes of margin | page | margin)."""
    top, left, _, _ = at
    r0, r1 = inner_run(box.mean(axis=1), tolerance)
    c0, c1 = inner_run(box.mean(axis=0), tolerance)
    return top + r0, left + c0, top + r1, left + c1


def inner_run(colours: np.ndarray, tolerance: int) -> tuple[int, int]:
    """(start, stop) of the lines between the run of the first line's colour and the run
    of the last one's; all of them where that leaves nothing."""
    off_first = np.abs(colours - colours[0]).max(axis=1) > tolerance
    off_last = np.abs(colours - colours[-1]).max(axis=1) > tolerance
    start, stop = int(np.argmax(off_first)), len(colours) - int(np.argmax(off_last[::-1]))
    if not off_first.any() or not off_last.any() or stop <= start:
        return 0, len(colours)
    return start, stop


def trimmed_at_size(image: Image.Image, base: Image.Image, box: Box) -> Image.Image:
    """The picture inside ``box`` (found on ``base``, ``image`` shrunk) cut from ``image`` at
    its own size, then shrunk as ``base`` was: shrunk first, a frame's edge falls inside a
    pixel, whose blend of frame and picture is no flat line, so a framed copy kept a rim a
    pixel wide on every side that its original, cut by no frame, lacks."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = (image.height / base.height, image.width / base.width)
    tolerance = frame_tolerance(np.asarray(base))
    top, left, bottom, right = refined(np.asarray(rgb), box, base.size[::-1], scale, tolerance)
    size = (max(1, round((right - left) / scale[1])), max(1, round((bottom - top) / scale[0])))
    crop = rgb.crop((left, top, right, bottom))
    return crop.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def refined(
    pixels: np.ndarray, box: Box, shape: tuple[int, int], scale: tuple[float, float], tolerance: int
) -> Box:
    """``box`` on an image of ``shape`` moved onto ``pixels``, ``scale`` times larger: each
    side a frame was cut from (the box short of the image's edge) at the first line near it
    that is not flat; the others at the edge."""
    top, left, bottom, right = box
    (sy, sx), (h, w) = scale, shape
    rows = pixels[:, math.ceil(left * sx) : math.floor(right * sx)]
    cols = pixels[math.ceil(top * sy) : math.floor(bottom * sy)].transpose(1, 0, 2)

    def side(lines: np.ndarray, at: int, scale: float, cut: bool, first: bool) -> int:
        if not cut:
            return 0 if first else len(lines)
        return edge(lines, at, scale, tolerance, first)

    return (
        side(rows, top, sy, top > 0, True),
        side(cols, left, sx, left > 0, True),
        side(rows, bottom, sy, bottom < h, False),
        side(cols, right, sx, right < w, False),
    )


def edge(lines: np.ndarray, at: int, scale: float, tolerance: int, first: bool) -> int:
    """The line of ``lines`` (a row per line) where the picture starts (``first``) or ends,
    within two shrunk pixels of ``at`` times ``scale`` (a shrunk pixel blends more than its
    own lines): ``at`` scaled where none there is not flat."""
    start = max(0, math.floor((at - 2) * scale))
    stop = min(len(lines), math.ceil((at + 2) * scale))
    shown = ~uniform_lines(lines[start:stop], tolerance)
    if not shown.any():
        return min(len(lines), round(at * scale))
    return start + (int(np.argmax(shown)) if first else len(shown) - int(np.argmax(shown[::-1])))


def picture(base: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """The picture in ``base``, and the box inside its own flat frame. An image framed in
    window chrome or a mount (:func:`in_chrome`) is taken to be the picture inside. Many
    pictures look framed too (a road sign's flat base line, a flag's stripes around its
    emblem), so stored images are trimmed the same way as uploads."""
    pixels = np.asarray(base)
    box = framed(pixels)  # a speck in chrome too: the chrome alone looks like a two-band flag
    if box is not None and in_chrome(pixels, box):
        base = cut(base, chrome_box(pixels) or box)
        return base, frame_box(np.asarray(base))
    return base, unspecked(box)
