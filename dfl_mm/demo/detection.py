"""Small, deliberately class-imbalanced detection datasets in COCO format.

Images hold coloured shapes on a textured background. In the 4-class demo two
classes are common (in almost every image), two are rare (in a few images
each), and objects come in several sizes, so a detector must handle both
imbalance and scale. The long-tail demos draw the class sets of
``longtail.TAILS`` with Zipf-like frequencies: the ten shapes, 36 confusable
shape tones, small crowded shapes and handwritten digits. The data is
generated deterministically on first use under ``data/`` (git-ignored).
"""
import json
import os
import os.path as osp
from typing import Optional

import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from PIL import Image, ImageDraw

from . import longtail, rendered, write_once

CLASSES = ('disc', 'box', 'triangle', 'cross')
PALETTE = [(220, 20, 60), (0, 0, 230), (0, 160, 0), (250, 170, 30)]
# probability that an image holds at least one object of the class
PRESENCE = (0.95, 0.9, 0.08, 0.05)
SPLITS = {'train': 240, 'val': 80}
DEFAULT_ROOT = 'data/dfl_demo_det'
LONGTAIL_ROOT = 'data/dfl_longtail_det'
LONGTAIL_SPLITS = {'train': 240, 'val': 80}
# the other long tails of the detection study: tail name -> (root, object sides in px)
# (the glyphs and strokes tails size their objects themselves: rendered.py)
TAIL_SETS = {'many': ('data/dfl_manyclass_det', (12, 16, 20, 24)),
             'small': ('data/dfl_smallcrowd_det', (8, 10, 12)),
             'digits': ('data/dfl_digits_det', (16, 20, 24, 32)),
             'glyphs': ('data/dfl_glyphs_det', None),
             'strokes': ('data/dfl_strokes_det', None)}
TAIL_SPECS = {**longtail.TAILS, **rendered.TAILS}


def _draw(draw, cls, box, rng):
    x0, y0, x1, y1 = box
    color = tuple(int(c) for c in np.clip(rng.normal(160, 50, 3), 30, 255))
    if cls == 0:
        draw.ellipse(box, fill=color)
    elif cls == 1:
        draw.rectangle(box, fill=color)
    elif cls == 2:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)
    else:
        w, h = x1 - x0, y1 - y0
        draw.rectangle((x0 + w * 0.35, y0, x1 - w * 0.35, y1), fill=color)
        draw.rectangle((x0, y0 + h * 0.35, x1, y1 - h * 0.35), fill=color)


def _image(rng, size):
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    annotations = []
    for cls, presence in enumerate(PRESENCE):
        if rng.random() >= presence:
            continue
        for _ in range(rng.integers(1, 3)):
            side = int(rng.choice([10, 16, 24, 36, 48]) * rng.uniform(0.85, 1.15))
            x0, y0 = rng.integers(0, size - side, 2)
            box = (int(x0), int(y0), int(x0 + side), int(y0 + side))
            _draw(draw, cls, box, rng)
            annotations.append((cls, box))
    return img, annotations


def _background(rng, size):
    base = rng.integers(0, 90, 3)
    noise = rng.integers(0, 40, (size, size, 3))
    return Image.fromarray((base + noise).astype(np.uint8))


def _longtail_image(rng, size, classes, sides=(12, 16, 24, 32), paint=None):
    """An image holding one object of each class in ``classes``, of a side from
    ``sides``; ``paint(rng, img, cls, box)`` draws one (default: the shape)."""
    img = _background(rng, size)
    taken, annotations = [], []
    for cls in classes:
        box = longtail.place(rng, size, sides, taken)
        (paint or _paint_shape)(rng, img, int(cls), box)
        annotations.append((int(cls), box))
    return img, annotations


def _paint_shape(rng, img, cls, box):
    longtail.draw_shape(ImageDraw.Draw(img), cls, box, longtail.colour(rng, cls))


def _paint_shape_tone(rng, img, cls, box):
    """The 36-class tail: class ``cls`` is a (shape, tone) pair of ``longtail.MANY_PAIRS``."""
    shape, tone = longtail.MANY_PAIRS[cls]
    fill = np.clip(np.array(longtail.SHAPE_TONES[tone]) + rng.normal(0, 12, 3), 0, 255)
    longtail.draw_shape(ImageDraw.Draw(img), shape, box, tuple(int(c) for c in fill))


def _digit_painter(split):
    """Paint scikit-learn's 8x8 handwritten digits, upsampled into the box, in a
    random light ink; train and val draw from disjoint halves of each digit's scans."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a test requirement
        raise ImportError('the digits long-tail demo needs scikit-learn '
                          '(pip install scikit-learn): it ships the digit scans') from err
    digits = load_digits()
    pools = []
    for d in range(10):
        scans = digits.images[digits.target == d]
        half = len(scans) * 2 // 3
        pools.append(scans[:half] if split == 'train' else scans[half:])

    def paint(rng, img, cls, box):
        x0, y0, x1, y1 = box
        scan = pools[cls][rng.integers(len(pools[cls]))]
        mask = Image.fromarray((scan * 255 / 16).astype(np.uint8)).resize(
            (x1 - x0, y1 - y0), Image.BILINEAR)
        ink = Image.new('RGB', mask.size, tuple(int(c) for c in rng.integers(150, 256, 3)))
        img.paste(ink, (x0, y0), mask)

    return paint


def _write_coco(root, seed, size, splits, classes, images_of):
    """Write ``root/{split}/*.png`` and ``root/annotations/{split}.json`` (once).

    ``images_of(rng, split, count)`` yields ``count`` (image, [(class, box)]).
    """
    def fill(tmp):
        rng = np.random.default_rng(seed)
        os.makedirs(osp.join(tmp, 'annotations'))
        for split, count in splits.items():
            os.makedirs(osp.join(tmp, split))
            images, annotations = [], []
            for i, (img, objects) in enumerate(images_of(rng, split, count)):
                name = f'{i:05d}.png'
                img.save(osp.join(tmp, split, name))
                images.append(dict(id=i, file_name=name, width=size, height=size))
                for cls, (x0, y0, x1, y1) in objects:
                    annotations.append(dict(
                        id=len(annotations) + 1, image_id=i, category_id=cls + 1,
                        bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0),
                        iscrowd=0))
            categories = [dict(id=i + 1, name=name) for i, name in enumerate(classes)]
            with open(osp.join(tmp, 'annotations', f'{split}.json'), 'w') as f:
                json.dump(dict(images=images, annotations=annotations,
                               categories=categories), f)

    return write_once(root, osp.join('annotations', 'val.json'), fill)


def generate_detection_demo(root: str = DEFAULT_ROOT, seed: int = 0, size: int = 128,
                            splits=None) -> str:
    """Write the 4-class dataset (idempotent; safe when several processes race).

    Layout: ``root/{train,val}/*.png`` and ``root/annotations/{train,val}.json``.

    Returns:
        str: ``root``.
    """
    def images_of(rng, split, count):
        return (_image(rng, size) for _ in range(count))

    return _write_coco(root, seed, size, splits or SPLITS, CLASSES, images_of)


def generate_longtail_detection_demo(root: str = LONGTAIL_ROOT, seed: int = 0,
                                     size: int = 128, splits=None) -> str:
    """Write the 10-class long-tail dataset (``longtail.split_counts`` instances
    per class and split, dealt over the images at random). Layout as
    :func:`generate_detection_demo`.

    Returns:
        str: ``root``.
    """
    def images_of(rng, split, count):
        dealt = longtail.deal(rng, longtail.split_counts(split), count)
        return (_longtail_image(rng, size, classes) for classes in dealt)

    return _write_coco(root, seed, size, splits or LONGTAIL_SPLITS, longtail.CLASSES,
                       images_of)


def generate_tail_detection_demo(tail: str, root: Optional[str] = None, seed: int = 0,
                                 size: int = 128, splits=None) -> str:
    """Write the long tail ``tail`` of :data:`TAIL_SETS` ('many', 'small',
    'digits', 'glyphs', 'strokes'): ``TAIL_SPECS[tail]`` instances per class and
    split, dealt over the images at random. Layout as :func:`generate_detection_demo`.

    Returns:
        str: ``root``.
    """
    spec, (default_root, sides) = TAIL_SPECS[tail], TAIL_SETS[tail]

    def images_of(rng, split, count):
        dealt = longtail.deal(rng, spec.split_counts(split), count)
        if tail in rendered.PAINTERS:
            return (rendered.PAINTERS[tail](rng, size, classes) for classes in dealt)
        paint = {'many': _paint_shape_tone, 'small': _paint_shape}.get(tail) or \
            _digit_painter(split)
        return (_longtail_image(rng, size, classes, sides, paint) for classes in dealt)

    return _write_coco(root or default_root, seed, size, splits or LONGTAIL_SPLITS,
                       spec.classes, images_of)


@DATASETS.register_module()
class DFLDemoCocoDataset(CocoDataset):
    """The demo detection data as a CocoDataset, generated on first use.

    Args:
        data_root (str): where the data lives (or will be generated).
        demo_seed (int): seed of the generator.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)
    DEMO_ROOT = DEFAULT_ROOT
    generate_demo = staticmethod(generate_detection_demo)

    def __init__(self, *args, data_root: Optional[str] = None, demo_seed: int = 0, **kwargs):
        data_root = self.DEMO_ROOT if data_root is None else data_root
        self.generate_demo(data_root, seed=demo_seed)
        super().__init__(*args, data_root=data_root, **kwargs)


@DATASETS.register_module()
class DFLLongTailCocoDataset(DFLDemoCocoDataset):
    """The long-tail detection demo (10 classes, 60:1), generated on first use;
    arguments as :class:`DFLDemoCocoDataset`."""

    METAINFO = dict(classes=longtail.CLASSES, palette=list(longtail.HUES))
    DEMO_ROOT = LONGTAIL_ROOT
    generate_demo = staticmethod(generate_longtail_detection_demo)


def _tail_dataset(name: str, tail: str):
    """A registered dataset class of the long tail ``tail`` (generated on first use)."""
    def generate(root, seed=0, **kwargs):
        return generate_tail_detection_demo(tail, root, seed, **kwargs)

    spec = TAIL_SPECS[tail]
    palette = [tuple(int(c) for c in np.random.default_rng(k).integers(40, 256, 3))
               for k in range(len(spec.classes))]
    cls = type(name, (DFLDemoCocoDataset, ), dict(
        METAINFO=dict(classes=spec.classes, palette=palette), DEMO_ROOT=TAIL_SETS[tail][0],
        generate_demo=staticmethod(generate),
        __doc__=f"The '{tail}' long-tail detection demo (``longtail.TAILS``), generated "
        'on first use; arguments as :class:`DFLDemoCocoDataset`.'))
    return DATASETS.register_module(module=cls)


DFLManyClassCocoDataset = _tail_dataset('DFLManyClassCocoDataset', 'many')
DFLSmallCrowdCocoDataset = _tail_dataset('DFLSmallCrowdCocoDataset', 'small')
DFLDigitsCocoDataset = _tail_dataset('DFLDigitsCocoDataset', 'digits')
DFLGlyphsCocoDataset = _tail_dataset('DFLGlyphsCocoDataset', 'glyphs')
DFLStrokesCocoDataset = _tail_dataset('DFLStrokesCocoDataset', 'strokes')
