"""The long-tail demos and the study's peer losses (tools/benchmarks/study_losses.py)."""
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from testkit import tool


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

    EqualizedFocalLoss = tool('benchmarks/study_losses').EqualizedFocalLoss
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
    EqualizedFocalLoss = tool('benchmarks/study_losses').EqualizedFocalLoss
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
    study = tool('benchmarks/benchmark_efficacy')
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


@pytest.mark.parametrize('tail, classes, ratio', [('many', 36, 50), ('small', 10, 50),
                                                  ('digits', 10, 50)])
def test_other_detection_tails_hold_their_zipf_counts(tmp_path, tail, classes, ratio):
    from dfl_mm.demo import longtail
    from dfl_mm.demo.detection import TAIL_SETS, generate_tail_detection_demo
    spec = longtail.TAILS[tail]
    root = generate_tail_detection_demo(tail, str(tmp_path / tail))
    assert len(spec.classes) == classes == len(set(spec.classes))
    assert spec.train_counts[0] / spec.train_counts[-1] >= ratio
    assert list(spec.train_counts) == sorted(spec.train_counts, reverse=True)
    low, high = min(TAIL_SETS[tail][1]), max(TAIL_SETS[tail][1])
    for split in ('train', 'val'):
        ann = json.load(open(f'{root}/annotations/{split}.json'))
        counts = Counter(a['category_id'] for a in ann['annotations'])
        assert [counts[k + 1] for k in range(classes)] == list(spec.split_counts(split))
        assert [c['name'] for c in ann['categories']] == list(spec.classes)
        for a in ann['annotations']:
            x, y, w, h = a['bbox']
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert int(low * 0.85) <= w <= high * 1.15 + 1
    assert min(spec.split_counts('val')) >= spec.val_min
    again = generate_tail_detection_demo(tail, str(tmp_path / 'again'))
    assert (open(f'{root}/annotations/train.json').read()
            == open(f'{again}/annotations/train.json').read())


@pytest.mark.parametrize('tail, classes, ratio', [('glyphs', 36, 70), ('strokes', 24, 50)])
def test_rendered_tails_hold_their_zipf_counts_and_boxes(tmp_path, tail, classes, ratio):
    from dfl_mm.demo.detection import TAIL_SPECS, generate_tail_detection_demo
    spec = TAIL_SPECS[tail]
    root = generate_tail_detection_demo(tail, str(tmp_path / tail))
    assert len(spec.classes) == classes == len(set(spec.classes))
    assert spec.train_counts[0] / spec.train_counts[-1] >= ratio
    for split in ('train', 'val'):
        ann = json.load(open(f'{root}/annotations/{split}.json'))
        counts = Counter(a['category_id'] for a in ann['annotations'])
        assert [counts[k + 1] for k in range(classes)] == list(spec.split_counts(split))
        for a in ann['annotations']:
            x, y, w, h = a['bbox']
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and min(w, h) >= 2
    again = generate_tail_detection_demo(tail, str(tmp_path / 'again'))
    assert (open(f'{root}/annotations/train.json').read()
            == open(f'{again}/annotations/train.json').read())


def test_rendered_tails_differ_in_kind_from_the_shapes():
    """Glyphs: each confusable pair has one member in the head third and one in the
    tail half; strokes: objects cut by the border and overlapping one another."""
    from dfl_mm.demo import rendered
    from dfl_mm.demo.detection import generate_tail_detection_demo
    order = rendered.GLYPHS
    for a, b in rendered._CONFUSABLE:
        assert sorted([order.index(a) < 18, order.index(b) < 18]) == [False, True]
    root = generate_tail_detection_demo('strokes', 'data/dfl_strokes_det')
    ann = json.load(open(f'{root}/annotations/train.json'))
    boxes = {}
    for a in ann['annotations']:
        boxes.setdefault(a['image_id'], []).append(a['bbox'])
    at_border = sum(x == 0 or y == 0 or x + w == 128 or y + h == 128
                    for x, y, w, h in (b for bs in boxes.values() for b in bs))
    overlapping = sum(any(_iou(b, c) > 0.1 for c in bs if c is not b)
                      for bs in boxes.values() for b in bs)
    assert at_border > 0.1 * len(ann['annotations'])
    assert overlapping > 0.1 * len(ann['annotations'])


def _iou(a, b):
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_the_tails_differ_in_what_makes_them_hard():
    from dfl_mm.demo import longtail
    from dfl_mm.demo.detection import LONGTAIL_SPLITS, TAIL_SETS
    many, small = longtail.TAILS['many'], longtail.TAILS['small']
    # many: 36 distinct (shape, tone) pairs; both halves mix most shapes and every
    # tone, so a tail class shares its shape with a head class of a close tone
    assert sorted(longtail.MANY_PAIRS) == [(s, t) for s in range(9) for t in range(4)]
    head, tail = longtail.head_tail(many.train_counts)
    for half in (head, tail):
        assert len({longtail.MANY_PAIRS[k][0] for k in half}) >= 7
        assert {longtail.MANY_PAIRS[k][1] for k in half} == set(range(4))
    # small: more and smaller objects to an image than the shapes tail
    per_image = sum(small.train_counts) / LONGTAIL_SPLITS['train']
    assert per_image > 2 * sum(longtail.TRAIN_COUNTS) / LONGTAIL_SPLITS['train']
    assert max(TAIL_SETS['small'][1]) < 12 + 1


def test_shapes_tail_is_the_data_it_always_was(tmp_path):
    """The refactor into ``longtail.TAILS`` left the shapes tail byte-identical."""
    import hashlib

    from dfl_mm.demo.detection import generate_longtail_detection_demo
    root = generate_longtail_detection_demo(str(tmp_path / 'lt'))
    digest = hashlib.sha256(open(f'{root}/annotations/train.json', 'rb').read()).hexdigest()
    assert digest == '460d2a301aa3bc71e2d2dfccf12f9b18f389f93336c061cd1ba19907f9e2f8bf'
    image = hashlib.sha256(open(f'{root}/train/00007.png', 'rb').read()).hexdigest()
    assert image == '5363bdcff16ec581594db42bfaa6e4cff12140e0c2dd6ae2887c3a302bf04c11'


def test_focal_with_adaptive_weights_is_focal_before_any_step_then_weighs_like_dfl():
    from mmdet.models.losses import FocalLoss

    AdaptiveWeightFocalLoss = tool('benchmarks/study_losses').AdaptiveWeightFocalLoss
    torch.manual_seed(3)
    pred = torch.randn(30, 4, dtype=torch.float64)
    target = torch.tensor([0] * 12 + [1] * 6 + [2] * 2 + [4] * 10)  # 4 = background
    weight = torch.rand(30, dtype=torch.float64)
    loss = AdaptiveWeightFocalLoss(num_classes=4, adaptive_weight=dict(
        momentum=0.0, normalise='head', apply_to='positive'))
    focal = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, reduction='none')
    torch.testing.assert_close(loss(pred, target, weight, avg_factor=5.0),
                               (focal(pred, target, weight) / 5.0).sum())
    loss.train()
    loss(pred.clone().requires_grad_(), target)  # one step: frequencies 12 : 6 : 2 : 0
    w = loss.adaptive.weights().double()
    assert float(w[0]) == pytest.approx(1.0) and float(w[3]) == 1.0 and w[2] > w[1] > 1
    element = torch.ones(30, 4, dtype=torch.float64)
    for i, c in enumerate(target.tolist()):
        if c < 4:
            element[i, c] = w[c]
    torch.testing.assert_close(loss.eval()(pred, target, weight, avg_factor=5.0),
                               (focal(pred, target, weight) * element / 5.0).sum())


def test_balanced_softmax_adds_the_log_prior_of_the_steps_before():
    BalancedSoftmaxCrossEntropyLoss = tool(
        'benchmarks/study_losses').BalancedSoftmaxCrossEntropyLoss
    torch.manual_seed(4)
    logits = torch.randn(1, 3, 2, 5, dtype=torch.float64)
    labels = torch.tensor([[[0, 0, 0, 0, 1], [0, 1, 2, 255, 0]]])
    loss = BalancedSoftmaxCrossEntropyLoss(num_classes=3).train()
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(loss(logits.clone().requires_grad_(), labels), ce)  # uniform
    prior = torch.tensor([6, 2, 1], dtype=torch.float64) / 9 * 0.01  # one step, EMA 0.99
    prior = prior / prior.sum()
    shifted = logits + torch.log(prior + 1e-4).view(1, 3, 1, 1)
    expected = torch.nn.functional.cross_entropy(shifted, labels, ignore_index=255)
    torch.testing.assert_close(loss.eval()(logits, labels), expected)


def test_poly1_is_cross_entropy_plus_one_minus_pt():
    Poly1CrossEntropyLoss = tool('benchmarks/study_losses').Poly1CrossEntropyLoss
    torch.manual_seed(5)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 3, 3))
    labels[0, 0, 0] = 255
    valid = labels != 255
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction='none')
    p_t = logits.softmax(1).gather(1, torch.where(valid, labels, 0).unsqueeze(1)).squeeze(1)
    expected = ((ce + 1 - p_t) * valid).sum() / valid.sum()
    torch.testing.assert_close(Poly1CrossEntropyLoss()(logits, labels), expected)


def test_manyclass_segmentation_demo_labels_follow_the_tail(tmp_path):
    import numpy as np
    from PIL import Image

    from dfl_mm.demo import longtail
    from dfl_mm.demo.segmentation import generate_manyclass_segmentation_demo
    root = generate_manyclass_segmentation_demo(str(tmp_path / 'many'))
    pixels = np.zeros(256, dtype=np.int64)
    for path in sorted((tmp_path / 'many' / 'ann_dir' / 'train').glob('*.png')):
        pixels += np.bincount(np.array(Image.open(path)).ravel(), minlength=256)
    assert pixels[37:].sum() == 0 and (pixels[:37] > 0).all()  # background + 36 classes
    counts = longtail.TAILS['many'].train_counts
    head, tail = longtail.head_tail(counts)
    assert pixels[[k + 1 for k in head]].sum() > 10 * pixels[[k + 1 for k in tail]].sum()
    assert root.endswith('many')


def _summary(mean, worst, head, tail):
    return dict(mean=mean, sd=1.0, worst=worst, head=head, mid=None, tail=tail, seeds=3,
                source='this study')


def test_leave_one_set_out_picks_on_the_other_sets_and_judges_the_left_out_one():
    """The rule (mean, worst >= focal; head >= focal - 1; tail >= focal) and the pick
    on the other sets (most sets passed, then the mean worst-seed margin)."""
    loo = tool('benchmarks/leave_one_out')
    focal = _summary(50, 48, 60, 40)
    summaries = {}
    for task in ('a', 'b', 'c'):
        summaries[(task, 'focal')] = focal
        summaries[(task, 'steady')] = _summary(51, 48.5, 59.5, 40.5)  # passes everywhere
    summaries[('a', 'bold')] = summaries[('b', 'bold')] = _summary(56, 54, 62, 45)
    summaries[('c', 'bold')] = _summary(47, 44, 55, 39)  # fails on c only
    verdict = loo.judge(summaries, 'a', 'steady')
    assert verdict['ok'] and verdict['head'] == -0.5
    assert not loo.judge(summaries, 'c', 'bold')['ok']
    assert not loo.passes(dict(mean=1, worst=1, head=-1.5, tail=1))  # head slack is 1
    lines = loo.leave_one_set_out(summaries, ['a', 'b', 'c'], ['steady', 'bold'])
    by_set = {line['held_out']: line for line in lines}
    # left out a or b: bold passes 1 of the other 2, steady 2: steady; left out c: bold
    assert by_set['a']['row'] == by_set['b']['row'] == 'steady'
    assert by_set['c']['row'] == 'bold' and not by_set['c']['verdict']['ok']
    table = loo.loso_table(lines)
    assert '| c | bold (2/2) |' in table and '✗' in table
    # a seed-0 screen, ahead on every set by its only seed, is no candidate at 3 seeds
    for task in ('a', 'b', 'c'):
        summaries[(task, 'screen')] = dict(_summary(60, 60, 70, 50), seeds=1)
    assert loo.eligible(summaries, ['a', 'b', 'c'], ['steady', 'screen']) == [
        'steady', 'screen']
    assert loo.eligible(summaries, ['a', 'b', 'c'], ['steady', 'screen', 'bold'], 3) == [
        'steady', 'bold']
    assert loo.eligible(summaries, ['a', 'b', 'z'], ['steady']) == []  # not run on z
