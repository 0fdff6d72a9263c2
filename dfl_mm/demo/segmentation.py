"""A small, class-imbalanced semantic segmentation dataset in mmseg's layout.

Per-pixel classes: background (most pixels), 'blob' (large regions), and two
rare ones: 'line' (thin, 4-7 px) and 'dot' (small discs, radius 5-9 px). A band of pixels at
random places is labelled 255 (ignore). Generated deterministically on first
use under ``data/`` (git-ignored), as ``img_dir/{train,val}/*.png`` and
``ann_dir/{train,val}/*.png``.

The long-tail demo (``DFLLongTailSegDataset``, under ``data/dfl_longtail_seg``)
labels the ten shape classes of ``longtail.py`` (Zipf-like, 60:1) on
background, in the same layout; the many-class tail (``DFLManyClassSegDataset``,
``data/dfl_manyclass_seg``) the 36 confusable shape tones (100:1).
"""
import os
import os.path as osp
from typing import Optional

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image, ImageDraw

from . import longtail, write_once

CLASSES = ('background', 'blob', 'line', 'dot')
PALETTE = [[0, 0, 0], [128, 64, 128], [250, 170, 30], [220, 20, 60]]
COLORS = {1: (90, 140, 90), 2: (200, 200, 60), 3: (200, 60, 60)}
SPLITS = {'train': 160, 'val': 40}
DEFAULT_ROOT = 'data/dfl_demo_seg'
IGNORE_INDEX = 255
LONGTAIL_ROOT = 'data/dfl_longtail_seg'
LONGTAIL_SPLITS = {'train': 160, 'val': 60}
MANYCLASS_ROOT = 'data/dfl_manyclass_seg'


def _sample(rng, size):
    noise = rng.integers(0, 60, (size, size, 3)) + rng.integers(20, 80, 3)
    img = Image.fromarray(noise.astype(np.uint8))
    label = Image.new('L', (size, size), 0)
    draw_img, draw_lbl = ImageDraw.Draw(img), ImageDraw.Draw(label)

    def jitter(cls):
        return tuple(int(c) for c in np.clip(np.array(COLORS[cls]) + rng.normal(0, 25, 3), 0, 255))

    for _ in range(rng.integers(1, 4)):  # blobs
        cx, cy = rng.integers(0, size, 2)
        rx, ry = rng.integers(size // 10, size // 4, 2)
        box = (int(cx - rx), int(cy - ry), int(cx + rx), int(cy + ry))
        draw_img.ellipse(box, fill=jitter(1))
        draw_lbl.ellipse(box, fill=1)
    if rng.random() < 0.4:  # thin lines (4-7 px), rare
        for _ in range(rng.integers(1, 3)):
            p0, p1 = rng.integers(0, size, 2), rng.integers(0, size, 2)
            width = int(rng.integers(4, 8))
            line = [tuple(int(v) for v in p0), tuple(int(v) for v in p1)]
            draw_img.line(line, fill=jitter(2), width=width)
            draw_lbl.line(line, fill=2, width=width)
    if rng.random() < 0.4:  # small dots, rare
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.integers(4, size - 4, 2)
            r = int(rng.integers(5, 10))
            box = (int(cx - r), int(cy - r), int(cx + r), int(cy + r))
            draw_img.ellipse(box, fill=jitter(3))
            draw_lbl.ellipse(box, fill=3)
    label = np.array(label)
    if rng.random() < 0.5:  # an unlabelled band
        y0 = int(rng.integers(0, size - 8))
        label[y0:y0 + int(rng.integers(2, 8))] = IGNORE_INDEX
    return img, Image.fromarray(label)


def _longtail_sample(rng, size, classes):
    """An image and its label map holding one shape of each class in ``classes``."""
    noise = rng.integers(0, 60, (size, size, 3)) + rng.integers(20, 80, 3)
    img = Image.fromarray(noise.astype(np.uint8))
    label = Image.new('L', (size, size), 0)
    draw_img, draw_lbl, taken = ImageDraw.Draw(img), ImageDraw.Draw(label), []
    for cls in classes:
        box = longtail.place(rng, size, (12, 16, 20, 24), taken)
        longtail.draw_shape(draw_img, int(cls), box, longtail.colour(rng, int(cls)))
        longtail.draw_shape(draw_lbl, int(cls), box, int(cls) + 1)
    return img, label


def _many_sample(rng, size, classes):
    """The 36-class tail (``longtail.TAILS['many']``): an image and its label map
    holding one shape of each class in ``classes``, a class being a (shape, tone)
    pair of ``longtail.MANY_PAIRS``; label ``k + 1`` for class ``k``."""
    noise = rng.integers(0, 60, (size, size, 3)) + rng.integers(20, 80, 3)
    img = Image.fromarray(noise.astype(np.uint8))
    label = Image.new('L', (size, size), 0)
    draw_img, draw_lbl, taken = ImageDraw.Draw(img), ImageDraw.Draw(label), []
    for cls in classes:
        shape, tone = longtail.MANY_PAIRS[int(cls)]
        box = longtail.place(rng, size, (14, 18, 22, 26), taken)
        fill = np.clip(np.array(longtail.SHAPE_TONES[tone]) + rng.normal(0, 12, 3), 0, 255)
        longtail.draw_shape(draw_img, shape, box, tuple(int(c) for c in fill))
        longtail.draw_shape(draw_lbl, shape, box, int(cls) + 1)
    return img, label


def _write_seg(root, seed, splits, samples_of):
    """Write ``root/{img_dir,ann_dir}/{split}/*.png`` (once); ``samples_of(rng,
    split, count)`` yields ``count`` (image, label map)."""
    def fill(tmp):
        rng = np.random.default_rng(seed)
        for split, count in splits.items():
            os.makedirs(osp.join(tmp, 'img_dir', split))
            os.makedirs(osp.join(tmp, 'ann_dir', split))
            for i, (img, label) in enumerate(samples_of(rng, split, count)):
                img.save(osp.join(tmp, 'img_dir', split, f'{i:05d}.png'))
                label.save(osp.join(tmp, 'ann_dir', split, f'{i:05d}.png'))

    return write_once(root, osp.join('ann_dir', 'val'), fill)


def generate_segmentation_demo(root: str = DEFAULT_ROOT, seed: int = 0, size: int = 96,
                               splits=None) -> str:
    """Write the 4-class dataset (idempotent; safe when several processes race).

    Returns:
        str: ``root``.
    """
    def samples_of(rng, split, count):
        return (_sample(rng, size) for _ in range(count))

    return _write_seg(root, seed, splits or SPLITS, samples_of)


def generate_longtail_segmentation_demo(root: str = LONGTAIL_ROOT, seed: int = 0,
                                        size: int = 96, splits=None) -> str:
    """Write the 11-label long-tail dataset (background + ``longtail.CLASSES``;
    ``longtail.split_counts`` shapes per class and split).

    Returns:
        str: ``root``.
    """
    def samples_of(rng, split, count):
        dealt = longtail.deal(rng, longtail.split_counts(split), count)
        return (_longtail_sample(rng, size, classes) for classes in dealt)

    return _write_seg(root, seed, splits or LONGTAIL_SPLITS, samples_of)


def generate_manyclass_segmentation_demo(root: str = MANYCLASS_ROOT, seed: int = 0,
                                         size: int = 96, splits=None) -> str:
    """Write the 37-label many-class tail (background + the 36 confusable shape
    tones of ``longtail.TAILS['many']``, 800 down to 8 shapes per class).

    Returns:
        str: ``root``.
    """
    spec = longtail.TAILS['many']

    def samples_of(rng, split, count):
        dealt = longtail.deal(rng, spec.split_counts(split), count)
        return (_many_sample(rng, size, classes) for classes in dealt)

    return _write_seg(root, seed, splits or LONGTAIL_SPLITS, samples_of)


@DATASETS.register_module()
class DFLDemoSegDataset(BaseSegDataset):
    """The demo segmentation data, generated on first use.

    Args:
        data_root (str): where the data lives (or will be generated).
        demo_seed (int): seed of the generator.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)
    DEMO_ROOT = DEFAULT_ROOT
    generate_demo = staticmethod(generate_segmentation_demo)

    def __init__(self, *args, data_root: Optional[str] = None, demo_seed: int = 0, **kwargs):
        data_root = self.DEMO_ROOT if data_root is None else data_root
        self.generate_demo(data_root, seed=demo_seed)
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        super().__init__(*args, data_root=data_root, **kwargs)


@DATASETS.register_module()
class DFLDemoBinarySegDataset(DFLDemoSegDataset):
    """The demo data as a binary task: 'blob' (1) against everything else (0).

    Pixels of other classes become background; ignored pixels stay 255.
    """

    METAINFO = dict(classes=('background', 'blob'), palette=PALETTE[:2])

    @classmethod
    def get_label_map(cls, new_classes=None):
        """Map line (2) and dot (3) to background; read by LoadAnnotations."""
        return {0: 0, 1: 1, 2: 0, 3: 0}

    def _update_palette(self):
        return [list(c) for c in self.METAINFO['palette']]


@DATASETS.register_module()
class DFLLongTailSegDataset(DFLDemoSegDataset):
    """The long-tail segmentation demo (background + 10 classes, 60:1),
    generated on first use; arguments as :class:`DFLDemoSegDataset`."""

    METAINFO = dict(classes=('background',) + longtail.CLASSES,
                    palette=[[0, 0, 0]] + [list(h) for h in longtail.HUES])
    DEMO_ROOT = LONGTAIL_ROOT
    generate_demo = staticmethod(generate_longtail_segmentation_demo)


@DATASETS.register_module()
class DFLManyClassSegDataset(DFLDemoSegDataset):
    """The many-class segmentation tail (background + 36 confusable shape tones,
    100:1), generated on first use; arguments as :class:`DFLDemoSegDataset`."""

    METAINFO = dict(classes=('background',) + longtail.TAILS['many'].classes,
                    palette=[[0, 0, 0]] + [[int(c) for c in np.random.default_rng(k).integers(
                        40, 256, 3)] for k in range(36)])
    DEMO_ROOT = MANYCLASS_ROOT
    generate_demo = staticmethod(generate_manyclass_segmentation_demo)
