"""A small, class-imbalanced semantic segmentation dataset in mmseg's layout.

Per-pixel classes: background (most pixels), 'blob' (large regions), and two
rare ones: 'line' (thin, 4-7 px) and 'dot' (small discs, radius 5-9 px). A band of pixels at
random places is labelled 255 (ignore). Generated deterministically on first
use under ``data/`` (git-ignored), as ``img_dir/{train,val}/*.png`` and
``ann_dir/{train,val}/*.png``.
"""
import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

from mmseg.datasets import BaseSegDataset
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS, METRICS

from . import write_once

CLASSES = ('background', 'blob', 'line', 'dot')
PALETTE = [[0, 0, 0], [128, 64, 128], [250, 170, 30], [220, 20, 60]]
COLORS = {1: (90, 140, 90), 2: (200, 200, 60), 3: (200, 60, 60)}
SPLITS = {'train': 160, 'val': 40}
DEFAULT_ROOT = 'data/dfl_demo_seg'
IGNORE_INDEX = 255


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


def generate_segmentation_demo(root: str = DEFAULT_ROOT, seed: int = 0, size: int = 96,
                               splits=None) -> str:
    """Write the dataset (idempotent; safe when several processes race).

    Returns:
        str: ``root``.
    """
    splits = splits or SPLITS

    def fill(tmp):
        rng = np.random.default_rng(seed)
        for split, count in splits.items():
            os.makedirs(osp.join(tmp, 'img_dir', split))
            os.makedirs(osp.join(tmp, 'ann_dir', split))
            for i in range(count):
                img, label = _sample(rng, size)
                img.save(osp.join(tmp, 'img_dir', split, f'{i:05d}.png'))
                label.save(osp.join(tmp, 'ann_dir', split, f'{i:05d}.png'))

    return write_once(root, osp.join('ann_dir', 'val'), fill)


@DATASETS.register_module()
class DFLDemoSegDataset(BaseSegDataset):
    """The demo segmentation data, generated on first use.

    Args:
        data_root (str): where the data lives (or will be generated).
        demo_seed (int): seed of the generator.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, *args, data_root: str = DEFAULT_ROOT, demo_seed: int = 0, **kwargs):
        generate_segmentation_demo(data_root, seed=demo_seed)
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


@METRICS.register_module()
class DFLPerClassIoUMetric(IoUMetric):
    """mmseg's IoUMetric that also returns each class's IoU (``IoU.<class>``).

    The per-class values then reach ``scalars.json`` and the benchmark tools,
    not only the printed table.
    """

    def compute_metrics(self, results: list) -> dict:
        metrics = super().compute_metrics(results)
        results = tuple(zip(*results))
        intersect, union = sum(results[0]), sum(results[1])
        iou = (intersect / union).numpy() * 100
        for name, value in zip(self.dataset_meta['classes'], iou):
            metrics[f'IoU.{name}'] = round(float(np.nan_to_num(value)), 2)
        return metrics
