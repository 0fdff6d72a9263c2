"""Long-tailed demo data: class sets with Zipf-like frequencies.

The detection and segmentation long-tail demos (``DFLLongTailCocoDataset``,
``DFLLongTailSegDataset``) draw the same ten classes; class ``k`` (0-based)
gets ``round(HEAD / (k + 1) ** ZIPF)`` training instances: 720 for the most
frequent, 12 for the rarest (60:1). The validation split holds at least
``VAL_MIN`` instances of every class so that the tail's AP / IoU is measured
on enough examples. Classes are told apart by shape and (jittered) colour,
like the 4-class demos.

The detection study has three more long tails that differ in what makes them
hard (:data:`TAILS`, ``detection.py`` draws them): ``many``, 36 visually
confusable classes (9 shapes x 4 close tones), 800 down to 8 training
instances (100:1); ``small``, the ten shapes at 8-12 px, ~18 to an image
(2500 down to 42); ``digits``, real handwritten digits (scikit-learn's
``load_digits``, disjoint train / val pools) on textured canvases (500 down to
10).

Only numpy and PIL here; the datasets live in ``detection.py`` and
``segmentation.py``.
"""
import math
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from PIL import ImageDraw

CLASSES = ('disc', 'box', 'triangle', 'cross', 'ring', 'diamond', 'hbar', 'vbar', 'frame',
           'plus')
HEAD, ZIPF = 720, math.log(60) / math.log(10)  # n_k = HEAD / k^ZIPF: 720 ... 12
TRAIN_COUNTS = tuple(round(HEAD / (k + 1) ** ZIPF) for k in range(len(CLASSES)))
VAL_MIN = 25
VAL_SHARE = 0.25
HUES = ((220, 60, 60), (60, 60, 220), (60, 180, 60), (230, 170, 40), (180, 60, 200),
        (60, 200, 200), (240, 240, 240), (140, 90, 40), (240, 120, 160), (150, 150, 60))


def zipf(head: int, tail: int, classes: int) -> Tuple[int, ...]:
    """Training instances per class, ``n_k = head / (k + 1)^a`` from ``head`` down to ``tail``."""
    a = math.log(head / tail) / math.log(classes)
    return tuple(round(head / (k + 1) ** a) for k in range(classes))


@dataclass(frozen=True)
class Tail:
    """A long-tailed class set: class names (most frequent first), training
    instances per class and the validation floor per class."""

    classes: Tuple[str, ...]
    train_counts: Tuple[int, ...]
    val_min: int = VAL_MIN

    def split_counts(self, split: str) -> Tuple[int, ...]:
        """Instances per class of a split: Zipf for 'train', >= ``val_min`` for 'val'."""
        if split == 'train':
            return self.train_counts
        return tuple(max(self.val_min, round(n * VAL_SHARE)) for n in self.train_counts)


SHAPE_TONES = ((205, 60, 55), (225, 125, 45), (195, 55, 150), (150, 95, 65))
# 36 classes: (shape, tone) pairs in a fixed shuffled frequency order, so that the
# head and the tail half both mix shapes and tones (7-8 of the 9 shapes, all 4 tones)
MANY_PAIRS = tuple((s, t) for s, t in np.random.default_rng(36).permutation(
    [(s, t) for s in range(9) for t in range(len(SHAPE_TONES))]).tolist())
TAILS = {
    'shapes': Tail(CLASSES, TRAIN_COUNTS),
    'many': Tail(tuple(f'{CLASSES[s]}-{t}' for s, t in MANY_PAIRS), zipf(800, 8, 36), 15),
    'small': Tail(CLASSES, zipf(2500, 42, 10)),
    'digits': Tail(tuple(str(d) for d in range(10)), zipf(500, 10, 10)),
}


def split_counts(split: str) -> Tuple[int, ...]:
    """Instances per class of a split of the shapes tail: Zipf for 'train', a
    floor of VAL_MIN for 'val'."""
    return TAILS['shapes'].split_counts(split)


def head_tail(counts=TRAIN_COUNTS) -> Tuple[List[int], List[int]]:
    """The classes (0-based) of the frequent half and of the rare half."""
    order = sorted(range(len(counts)), key=lambda k: -counts[k])
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])


def deal(rng, counts, images: int) -> List[List[int]]:
    """Spread ``counts[k]`` instances of each class k over ``images`` images at random."""
    pool = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(pool)
    return [list(part) for part in np.array_split(pool, images)]


def colour(rng, cls: int) -> Tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(np.array(HUES[cls]) + rng.normal(0, 20, 3), 0, 255))


def draw_shape(draw: ImageDraw.ImageDraw, cls: int, box, fill) -> None:
    """Class ``cls``'s shape inside ``box`` = (x0, y0, x1, y1), filled with ``fill``
    (a colour on an image, a label on a label map)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    name = CLASSES[cls]
    if name == 'disc':
        draw.ellipse(box, fill=fill)
    elif name == 'box':
        draw.rectangle(box, fill=fill)
    elif name == 'triangle':
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif name in ('cross', 'plus'):
        t = 0.35 if name == 'cross' else 0.42
        draw.rectangle((x0 + w * t, y0, x1 - w * t, y1), fill=fill)
        draw.rectangle((x0, y0 + h * t, x1, y1 - h * t), fill=fill)
    elif name == 'ring':
        draw.ellipse(box, outline=fill, width=max(2, int(w * 0.2)))
    elif name == 'diamond':
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif name == 'hbar':
        draw.rectangle((x0, y0 + h * 0.3, x1, y1 - h * 0.3), fill=fill)
    elif name == 'vbar':
        draw.rectangle((x0 + w * 0.3, y0, x1 - w * 0.3, y1), fill=fill)
    else:  # frame
        draw.rectangle(box, outline=fill, width=max(2, int(w * 0.2)))


def place(rng, size: int, sides, taken: list, tries: int = 30):
    """A box of a random side from ``sides`` that overlaps no box in ``taken``
    by more than a sliver (the last try is kept if none fits)."""
    for _ in range(tries):
        side = int(rng.choice(sides) * rng.uniform(0.85, 1.15))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        box = (x0, y0, x0 + side, y0 + side)
        if all(_overlap(box, other) < 0.1 for other in taken):
            break
    taken.append(box)
    return box


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
