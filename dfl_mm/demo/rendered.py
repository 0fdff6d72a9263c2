"""Two detection long tails drawn by generators that share no rendering code
with the shapes of ``longtail.py``.

- ``glyphs``: 36 characters (0-9, A-Z) of Pillow's built-in font, with the
  confusable pairs O/0, I/1, S/5, B/8, Z/2, G/6 split between the head and the
  tail of the frequency order, so that a rare letter looks like a frequent
  digit (or the reverse); bold, slanted, of several sizes and inks, on gradient
  paper with pen specks; 600 down to 8 training instances (Zipf, 75:1).
- ``strokes``: 24 stroke-drawn pictograms (each class a fixed set of 2-3
  polylines drawn from a class-seeded generator, jittered per instance), cut
  by the image border and occluding one another (drawn over each other, each
  covering at most half of an earlier one's box); 500 down to 10 training
  instances (50:1).

Boxes are the visible extent of each object's ink inside the image (before
later objects are drawn over it). Only numpy and PIL; the COCO files are
written by ``detection.py``.
"""
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .longtail import Tail, zipf

_CONFUSABLE = (('0', 'O'), ('1', 'I'), ('5', 'S'), ('8', 'B'), ('2', 'Z'), ('6', 'G'))


def _glyph_order() -> Tuple[str, ...]:
    """The 36 characters, most frequent first: of each confusable pair one
    member in the head half and the other in the tail half (fixed shuffle)."""
    rng = np.random.default_rng(2021)
    paired = {c for pair in _CONFUSABLE for c in pair}
    rest = [c for c in '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ' if c not in paired]
    rest = [rest[i] for i in rng.permutation(len(rest))]
    head, tail = [], []
    for a, b in _CONFUSABLE:
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        head.append(first)
        tail.append(second)
    half = 18 - len(head)
    head, tail = head + rest[:half], tail + rest[half:]
    return tuple(head[i] for i in rng.permutation(18)) + tuple(tail[i] for i in
                                                               rng.permutation(18))


GLYPHS = _glyph_order()
STROKE_CLASSES = tuple(f'pictogram-{k:02d}' for k in range(24))
TAILS = {
    'glyphs': Tail(GLYPHS, zipf(600, 8, len(GLYPHS)), 15),
    'strokes': Tail(STROKE_CLASSES, zipf(500, 10, len(STROKE_CLASSES)), 15),
}
Box = Tuple[int, int, int, int]


def _paper(rng, size: int) -> Image.Image:
    """A vertical gradient between two random greys with pen specks."""
    top, bottom = rng.integers(10, 120, 2)
    column = np.linspace(top, bottom, size)[:, None, None]
    tint = rng.uniform(0.8, 1.2, 3)[None, None, :]
    paper = np.broadcast_to(column * tint, (size, size, 3)).copy()
    specks = rng.random((size, size)) < 0.01
    paper[specks] = rng.integers(0, 255, (int(specks.sum()), 3))
    return Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))


def glyph_image(rng, size: int, classes) -> Tuple[Image.Image, List[Tuple[int, Box]]]:
    """An image holding one glyph of each class in ``classes``, placed on a
    coarse grid of free cells so that glyphs do not overlap."""
    img = _paper(rng, size)
    cells = 5
    step = size // cells
    free = list(rng.permutation(cells * cells))
    annotations = []
    for cls in classes:
        if not free:
            break
        cell = int(free.pop())
        font = ImageFont.load_default(size=int(rng.integers(22, 34)))
        mask = Image.new('L', (56, 56))
        ImageDraw.Draw(mask).text((10, 4), GLYPHS[cls], font=font, fill=255, stroke_width=1,
                                  stroke_fill=255)
        mask = mask.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
        bbox = mask.getbbox()
        if bbox is None:
            continue
        mask = mask.crop(bbox)
        w, h = mask.size
        x0 = (cell % cells) * step + int(rng.integers(0, max(1, step - w + 1)))
        y0 = (cell // cells) * step + int(rng.integers(0, max(1, step - h + 1)))
        x0, y0 = min(x0, size - w), min(y0, size - h)
        ink = tuple(int(c) for c in rng.integers(130, 256, 3))
        img.paste(Image.new('RGB', mask.size, ink), (x0, y0), mask)
        annotations.append((int(cls), (x0, y0, x0 + w, y0 + h)))
    return img, annotations


def _pictogram(cls: int) -> List[np.ndarray]:
    """Class ``cls``'s strokes: 2-3 polylines of 3-4 points in the unit square."""
    rng = np.random.default_rng(1000 + cls)
    return [rng.uniform(0, 1, (int(rng.integers(3, 5)), 2))
            for _ in range(int(rng.integers(2, 4)))]


PICTOGRAMS = tuple(_pictogram(k) for k in range(len(STROKE_CLASSES)))


def stroke_image(rng, size: int, classes) -> Tuple[Image.Image, List[Tuple[int, Box]]]:
    """An image holding one pictogram of each class in ``classes``, anywhere
    (up to half of it outside the image), over one another in random order."""
    img = _paper(rng, size)
    draw = ImageDraw.Draw(img)
    annotations = []
    taken = []
    for cls in classes:
        # redrawn until at least 8 x 8 px of its ink lies inside the image and it
        # covers at most half of an earlier object's box (occluding, not hiding it)
        for tries in range(50):
            mask, bbox = _strokes_mask(rng, size, PICTOGRAMS[cls])
            if bbox is not None and min(bbox[2] - bbox[0], bbox[3] - bbox[1]) >= 8 and (
                    tries > 40 or all(_covered(box, bbox) <= 0.5 for box in taken)):
                break
        taken.append(bbox)
        draw.bitmap((0, 0), mask, fill=tuple(int(c) for c in rng.integers(110, 256, 3)))
        annotations.append((int(cls), tuple(int(v) for v in bbox)))
    return img, annotations


def _covered(box, by) -> float:
    """The share of ``box`` that ``by`` covers."""
    w = min(box[2], by[2]) - max(box[0], by[0])
    h = min(box[3], by[3]) - max(box[1], by[1])
    return max(w, 0) * max(h, 0) / ((box[2] - box[0]) * (box[3] - box[1]))


def _strokes_mask(rng, size, strokes):
    side = int(rng.integers(24, 44))
    x0, y0 = (int(v) for v in rng.integers(-side // 2, size - side // 2, 2))
    width = int(rng.integers(3, 5))
    mask = Image.new('L', (size, size))
    pen = ImageDraw.Draw(mask)
    for stroke in strokes:
        points = (stroke + rng.normal(0, 0.03, stroke.shape)) * side + (x0, y0)
        pen.line([tuple(p) for p in points.tolist()], fill=255, width=width)
    return mask, mask.getbbox()


PAINTERS = {'glyphs': glyph_image, 'strokes': stroke_image}
