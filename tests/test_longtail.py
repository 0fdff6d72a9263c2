"""The long-tail demos and the study's peer losses (tools/benchmarks/study_losses.py)."""
import json
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT

sys.path.insert(0, str(ROOT / 'tools' / 'benchmarks'))


def test_longtail_detection_demo_holds_the_zipf_counts(tmp_path):
    from dfl_mm.demo import longtail
    from dfl_mm.demo.detection import generate_longtail_detection_demo
    root = generate_longtail_detection_demo(str(tmp_path / 'lt'))
    assert longtail.TRAIN_COUNTS[0] / longtail.TRAIN_COUNTS[-1] >= 50
    assert 10 <= longtail.TRAIN_COUNTS[-1] <= 30 and len(longtail.CLASSES) >= 10
    for split in ('train', 'val'):
        ann = json.load(open(f'{root}/annotations/{split}.json'))
        counts = Counter(a['category_id'] for a in ann['annotations'])
        assert [counts[k + 1] for k in range(10)] == list(longtail.split_counts(split))
        assert [c['name'] for c in ann['categories']] == list(longtail.CLASSES)
        for a in ann['annotations']:
            x, y, w, h = a['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
    assert min(longtail.split_counts('val')) >= longtail.VAL_MIN
    # deterministic: a second root from the same seed holds the same files
    again = generate_longtail_detection_demo(str(tmp_path / 'again'))
    assert (open(f'{root}/annotations/train.json').read()
            == open(f'{again}/annotations/train.json').read())


def test_longtail_segmentation_demo_labels_follow_the_tail(tmp_path):
    from dfl_mm.demo.segmentation import generate_longtail_segmentation_demo
    root = generate_longtail_segmentation_demo(str(tmp_path / 'lt'))
    pixels = sum(np.bincount(np.asarray(Image.open(f)).reshape(-1), minlength=256)
                 for f in sorted((tmp_path / 'lt' / 'ann_dir' / 'train').glob('*.png')))
    assert pixels[11:].sum() == 0 and (pixels[:11] > 0).all()
    # the most frequent class covers far more pixels than the rarest one
    assert pixels[1] > 50 * pixels[10]
    assert len(list((tmp_path / 'lt' / 'img_dir' / 'val').glob('*.png'))) == 60
    assert root.endswith('lt')


def test_head_tail_splits_by_training_frequency():
    from dfl_mm.demo import longtail
    assert longtail.head_tail() == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert longtail.head_tail((1, 9, 5, 3)) == ([1, 2], [0, 3])


def test_equalized_focal_loss_starts_as_focal_loss():
    """Before any step every g_j = 1, so gamma_j = gamma_b and EFL is mmdet's
    sigmoid focal loss (gamma 2, alpha 0.25) with the same weights and avg_factor."""
    from mmdet.models.losses import FocalLoss
    from study_losses import EqualizedFocalLoss
    torch.manual_seed(0)
    pred = torch.randn(50, 6, dtype=torch.float64)
    target = torch.randint(0, 7, (50,))  # 6 = background
    weight = torch.rand(50, dtype=torch.float64)
    efl = EqualizedFocalLoss(num_classes=6)
    focal = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25)
    torch.testing.assert_close(efl(pred, target, weight, avg_factor=7.0),
                               focal(pred, target, weight, avg_factor=7.0))


def test_equalized_focal_loss_focuses_harder_on_classes_with_few_positive_gradients():
    """The hook adds |dL/dz| of positive and negative elements per class; g_j =
    pos / neg; gamma_j = gamma_b + s (1 - g_j) and the loss follows the new gammas."""
    from study_losses import EqualizedFocalLoss
    torch.manual_seed(1)
    efl = EqualizedFocalLoss(num_classes=3, gamma_b=2.0, scale=8.0).train()
    pred = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0] * 20 + [1] * 2 + [3] * 18)  # class 2 has no positive
    efl(pred, target, avg_factor=22.0).backward()
    onehot = torch.nn.functional.one_hot(target, 4)[:, :3].double()
    grad = pred.grad.abs()
    torch.testing.assert_close(efl.pos_grad, (grad * onehot).sum(0))
    torch.testing.assert_close(efl.neg_grad, (grad * (1 - onehot)).sum(0))
    ratio = efl.gradient_ratio()
    assert ratio[2] == 0 and ratio[1] < ratio[0] <= 1
    gamma = 2.0 + 8.0 * (1 - ratio)
    p = pred.detach().sigmoid()
    p_t = torch.where(onehot > 0, p, 1 - p)
    alpha_t = torch.where(onehot > 0, 0.25, 0.75)
    expected = (gamma / 2.0 * alpha_t * (1 - p_t) ** gamma * -p_t.log()).sum() / 22.0
    torch.testing.assert_close(efl(pred.detach(), target, avg_factor=22.0), expected)


def test_study_rows_fill_the_tasks_class_count():
    import benchmark_efficacy as study
    args = study.argparse.Namespace(adaptive=[])
    efl = study.det_loss('EFL', args, num_classes=10)
    assert efl['num_classes'] == 10 and efl['use_sigmoid'] is True
    effective = study.seg_loss('DFL learnable + effective', 0.4, args, num_classes=11)
    assert effective['adaptive_weight'] == dict(basis='effective', power=1.0)
    assert effective['num_classes'] == 11 and effective['loss_weight'] == 0.4
    assert study.seg_loss('CE + weights', 1.0, args, num_classes=11)['num_classes'] == 11
    shipped = study.seg_loss('DFL learnable + weights', 1.0, args, num_classes=11)
    assert shipped['class_weight'] == 'adaptive' and shipped['adaptive_weight'] is None
    lovasz = study.seg_loss('CE + Lovasz', 0.4, args)
    assert [loss['type'] for loss in lovasz] == ['CrossEntropyLoss', 'LovaszLoss']
    assert all(loss['loss_weight'] == 0.4 for loss in lovasz)
