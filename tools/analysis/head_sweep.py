"""Does DualFocalLoss work in every dense head? A sweep over the model zoos.

    python tools/analysis/head_sweep.py [--only det|seg]
        (markdown tables on stdout, progress on stderr)

Detection: every config shipped inside mmdet whose model has a dense
classification loss DualFocalLoss replaces (``FocalLoss``, the quality targets'
``QualityFocalLoss`` and ``VarifocalLoss``, a dense head's sigmoid
``CrossEntropyLoss``: RPN, YOLOX; SSD's softmax), one per (detector, heads) pair
(an R50 one where there is, else the shortest name, so backbone, schedule and
dataset variants count once). Segmentation: one config per mmseg model folder
whose decode head uses a softmax ``CrossEntropyLoss``, one per decode head type. Each is
switched to DualFocalLoss by ``dfl_mm.apis.switch`` (the same
as ``tools/dfl_switch.py``), built, and trained one forward + backward step on
a tiny CPU batch (2 images of 128 x 128, 3 boxes each, or random label maps):
it passes when the loss is finite, every DualFocalLoss is called with finite
results and every learnable gamma gets a finite gradient. Prints one row per
head and "N of M".
"""
import argparse
import contextlib
import glob
import os.path as osp
import re
import sys
import time
import traceback
from collections import OrderedDict

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# input sizes tried in turn: tiny first; some heads need larger feature maps
# (deformable convs or top-k over the anchors of P3-P7, LRASPP's 49-pixel pooling)
IMAGE_SIZES = {'det': (128, 256, 512), 'seg': (128, 512)}
LATE_EPOCH = 1000


def _configs_root(package: str) -> str:
    from mmengine.utils import get_installed_path
    return osp.join(get_installed_path(package), '.mim', 'configs')


def _config_files(package):
    root = _configs_root(package)
    files = sorted(glob.glob(osp.join(root, '**', '*.py'), recursive=True))
    return root, [f for f in files if '_base_' not in f.split(osp.sep)]


def _mentions(path, pattern, seen=None) -> bool:
    """Whether ``path`` or a local ``_base_`` it names mentions ``pattern``."""
    seen = seen if seen is not None else set()
    if path in seen or not osp.isfile(path):
        return False
    seen.add(path)
    text = open(path).read()
    if re.search(pattern, text):
        return True
    bases = re.findall(r"['\"]([^'\"]+\.py)['\"]", text)  # _base_ files it names
    return any(_mentions(osp.normpath(osp.join(osp.dirname(path), b)), pattern, seen)
               for b in bases if '::' not in b)


def _heads(model: dict, loss_type_paths):
    """Head types that hold the replaced losses: {'bbox_head': 'RetinaHead', ...}."""
    heads = OrderedDict()
    for path, _ in loss_type_paths:
        parts = path.split('.')[1:]  # drop 'model' and the loss key (not a replaced head's name)
        parts = parts if parts[-1].endswith('head') else parts[:-1]
        node, name = model, []
        for part in parts:
            node = node[int(part)] if part.isdigit() else node[part]
            name.append(part)
            in_head = part.endswith('head') or (part.isdigit() and name[-2].endswith('head'))
            if isinstance(node, dict) and 'type' in node and in_head:
                heads['.'.join(name)] = node['type']
    return heads


def _preference(rel):
    """Sort key of a head's representative: R50 first, then the shortest name."""
    name = osp.basename(rel)
    return ('r50' not in name, len(name), rel)


def detection_candidates():
    """[(config, key, heads)] one per (detector type, heads with a replaced loss)."""
    from mmengine.config import Config

    from dfl_mm.apis.switch import dfl_overrides
    root, files = _config_files('mmdet')
    chosen = OrderedDict()
    for path in files:
        if not _mentions(path, r"FocalLoss|VarifocalLoss|CrossEntropyLoss|SSDHead"):
            continue
        try:
            cfg = Config.fromfile(path)
        except Exception:  # noqa: BLE001 - configs needing absent extras
            continue
        if 'model' not in cfg:
            continue
        _, replaced = dfl_overrides(cfg)
        if not replaced:
            continue
        heads = _heads(cfg.model, replaced)
        key = (cfg.model.type, tuple(heads.values()))
        rel = osp.relpath(path, root)
        if key not in chosen or _preference(rel) < _preference(chosen[key][0]):
            chosen[key] = (rel, heads)
    return [(rel, key, heads) for key, (rel, heads) in chosen.items()]


def segmentation_candidates():
    """[(config, key, heads)] one per decode-head type with a CE (softmax or sigmoid)."""
    from mmengine.config import Config

    from dfl_mm.apis.switch import dfl_overrides
    root, files = _config_files('mmseg')
    by_folder = OrderedDict()
    for path in files:
        folder = osp.relpath(path, root).split(osp.sep)[0]
        by_folder.setdefault(folder, []).append(path)
    chosen = OrderedDict()
    for folder, paths in by_folder.items():
        for path in sorted(paths, key=_preference):
            try:
                cfg = Config.fromfile(path)
            except Exception:  # noqa: BLE001
                continue
            if 'model' not in cfg or 'decode_head' not in cfg.model:
                continue
            _, replaced = dfl_overrides(cfg)
            if not any('decode_head' in p for p, _ in replaced):
                break  # the folder's models have no softmax CE decode head
            heads = _heads(cfg.model, replaced)
            key = (cfg.model.type, tuple(heads.values()))
            rel = osp.relpath(path, root)
            if key not in chosen or _preference(rel) < _preference(chosen[key][0]):
                chosen[key] = (rel, heads)
            break
    return [(rel, key, heads) for key, (rel, heads) in chosen.items()]


def _config(package, rel, dfl: bool):
    """The config, switched to DualFocalLoss when ``dfl`` (else as shipped)."""
    from mmengine.config import Config

    from dfl_mm.apis.switch import dfl_overrides
    cfg = Config.fromfile(osp.join(_configs_root(package), rel))
    if dfl:
        overrides, _ = dfl_overrides(cfg)
        cfg.merge_from_dict(overrides, allow_list_keys=False)
    return cfg


def _watch_calls(model):
    """The model's DualFocalLoss modules, each with a list of its training calls'
    outputs (filled by a forward hook)."""
    import dfl_mm
    losses = [m for m in model.modules() if isinstance(m, dfl_mm.DualFocalLoss)]
    calls = {id(m): [] for m in losses}
    for m in losses:
        m.register_forward_hook(lambda mod, args, out: calls[id(mod)].append(out.detach()))
    return losses, calls


def _offline(node):
    """Drop every pretrained weight a model config would fetch (the backbone's, and
    nested ones such as DetectoRS's RFP backbone): random weights do for one step."""
    if isinstance(node, dict):
        node.pop('pretrained', None)
        init = node.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            node.pop('init_cfg')
        for value in node.values():
            _offline(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _offline(value)


def _build(cfg, registry):
    """The model in training mode, with no checkpoint to fetch (offline)."""
    from mmengine.model import revert_sync_batchnorm
    _offline(cfg.model)
    if 'teacher_ckpt' in cfg.model:  # LAD's / LD's teacher: random weights do for one step
        cfg.model.teacher_ckpt = None
    teacher = cfg.model.get('teacher_config')
    if isinstance(teacher, str) and not osp.isfile(teacher):  # LD: relative to mmdet's root
        cfg.model.teacher_config = osp.join(osp.dirname(_configs_root('mmdet')), teacher)
    model = revert_sync_batchnorm(registry.build(cfg.model))
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level, logger.level = logger.level, logging.WARNING  # init_weights reports each tensor
    try:
        model.init_weights()  # as the runner does (Sparse R-CNN's proposals start here)
    except Exception:  # noqa: BLE001 - SAN's init_weights is broken in mmseg 1.2.2:
        pass  # its construction-time weights do for one step
    finally:
        logger.setLevel(level)
    model.train()  # (LAD's train() returns None)
    return model


def _num_classes(model, pick=max) -> int:
    """The largest (``pick=min``: smallest) class count > 1 of the model's heads (an
    RPN has 1; detection takes the smallest, so that box labels fit the box head
    beside a semantic head of more classes: HTC, SCNet, Panoptic FPN)."""
    counts = [m.num_classes for m in model.modules()
              if isinstance(getattr(m, 'num_classes', None), int) and m.num_classes > 1]
    return pick(counts) if counts else 2


def _seed_everything(seed):
    """torch's, numpy's and Python's RNGs (mmdet's demo inputs draw from numpy's):
    a config's step does not depend on what ran before it."""
    import random

    import numpy as np
    import torch
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def check_detection(rel, dfl=True, size=128, seed=0):
    """Train one step of ``rel`` (mmdet): (ok, message)."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    _seed_everything(seed)
    model = _build(_config('mmdet', rel, dfl), MODELS)
    # instance masks and a semantic map (HTC) for the heads that need them; a box
    # head whose assigner reads tensor masks (RTMDet's) gets neither
    for with_mask in (True, False):
        packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, size, size)] * 2,
                                num_items=[3, 3], num_classes=_num_classes(model, min),
                                with_mask=with_mask, with_semantic=with_mask)
        data = model.data_preprocessor(packed, True)
        try:
            return _step(model, data, dfl)
        except Exception:  # noqa: BLE001
            if not with_mask:
                raise


def check_segmentation(rel, dfl=True, size=128, seed=0):
    """Train one step of ``rel`` (mmseg): (ok, message)."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    _seed_everything(seed)
    cfg = _config('mmseg', rel, dfl)
    if not cfg.model.data_preprocessor.get('size_divisor'):
        cfg.model.data_preprocessor.size = (size, size)
    model = _build(cfg, MODELS)
    num_classes = _num_classes(model)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             ori_shape=(size, size)))
        labels = torch.randint(0, num_classes, (1, size, size))
        labels[:, :8] = 255
        sample.gt_sem_seg = PixelData(data=labels)
        sample.gt_edge_map = PixelData(data=(labels != labels.roll(1, -1)).long())  # PIDNet
        samples.append(sample)
    inputs = [torch.randint(0, 255, (3, size, size), dtype=torch.uint8) for _ in range(2)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    return _step(model, data, dfl)


def _attempt(check, rel, dfl, size, seed=0):
    """(ok, message, whether it failed while the model was built)."""
    try:
        return (*check(rel, dfl, size, seed), False)
    except Exception as error:  # noqa: BLE001 - a failing head is a row, not a crash
        frames = traceback.extract_tb(error.__traceback__)
        return False, (f'{type(error).__name__}: {str(error).splitlines()[0][:160]} '
                       f'({osp.basename(frames[-1].filename)}:{frames[-1].lineno})'), \
            any(frame.name == '_build' for frame in frames)


def run_one(kind, rel):
    """(ok, message, verdict) of one config; verdict says whose failure it is.

    A failure at every size is re-run with the config's own loss: failing
    there too, it is the head's or this harness's limit, not DualFocalLoss's.
    """
    check = check_detection if kind == 'det' else check_segmentation
    with contextlib.redirect_stdout(sys.stderr), _runner_state(kind):
        return _run_one(check, kind, rel)


@contextlib.contextmanager
def _runner_state(kind):
    """What a runner sets up for a model (default scope; the epoch and iteration
    TOOD and BoxInst read from the message hub), restored afterwards."""
    from mmengine.logging import MessageHub
    from mmengine.registry import DefaultScope
    hub = MessageHub.get_current_instance()
    saved = {key: hub.get_info(key) for key in ('epoch', 'iter')}
    hub.update_info('epoch', 0)
    hub.update_info('iter', 0)
    try:
        with DefaultScope.overwrite_default_scope('mmdet' if kind == 'det' else 'mmseg'):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                hub.runtime_info.pop(key, None)
            else:
                hub.update_info(key, value)


def _run_one(check, kind, rel):
    for size in IMAGE_SIZES[kind]:
        ok, message, at_build = _attempt(check, rel, True, size)
        if ok:
            return True, f'{message} ({size} px)', 'ok'
        if at_build:  # a model that does not build: no image size changes that
            break
    own_ok, own_message, _ = _attempt(check, rel, False, size)
    if own_ok:
        return False, message, 'DFL fails (its own loss trains)'
    if 'nan' in message and 'nan' in own_message:
        # a non-finite step with either loss is the random weights' and data's, not
        # the head's: one more draw decides (seen with TridentNet's RPN, 2 threads)
        ok, again, _ = _attempt(check, rel, True, size, seed=1)
        if ok:
            return True, f'{again} ({size} px; seed 0 was non-finite with its own loss too)', 'ok'
    return False, f'{message}; with its own loss: {own_message}', 'fails with its own loss too'


def _step(model, data, dfl=True):
    import torch
    from mmengine.logging import MessageHub
    dfls, calls = _watch_calls(model)
    hub = MessageHub.get_current_instance()
    # a head that changes its loss with the epoch (TOOD: initial_loss_cls for the
    # first epochs) trains a second step at a late epoch, so that both are called
    for epoch in (0, LATE_EPOCH):
        hub.update_info('epoch', epoch)
        losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        total.backward()
        if not torch.isfinite(total):
            return False, f'loss {float(total)}'
        if all(calls[id(m)] for m in dfls):
            break
    if not dfl:
        return True, f'loss {float(total):.3f}'
    if not dfls:
        return False, 'no DualFocalLoss in the built model'
    missing = sum(not calls[id(m)] for m in dfls)
    if missing:
        return False, (f'{missing} of {len(dfls)} DualFocalLoss modules were not called: '
                       'the head does not call its loss_cls in training')
    if not all(bool(torch.isfinite(out).all()) for m in dfls for out in calls[id(m)]):
        return False, 'a DualFocalLoss call returned a non-finite loss'
    grads = [m.gamma_logit.grad for m in dfls if m.learnable_gamma]
    if any(g is None or not bool(torch.isfinite(g).all()) for g in grads):
        return False, f'gamma gradients {grads}'
    shown = f', gamma grad {float(grads[0].flatten()[0]):+.2e}' if grads else ''
    return True, f'loss {float(total):.3f}, {len(dfls)} DFL{shown}'


def sweep(kind, log=None):
    """Rows dict(config, model, heads, ok, message, seconds) of ``kind`` ('det'/'seg')."""
    candidates = detection_candidates() if kind == 'det' else segmentation_candidates()
    rows = []
    for rel, (model_type, _), heads in candidates:
        start = time.time()
        ok, message, verdict = run_one(kind, rel)
        row = dict(config=rel, model=model_type, heads=', '.join(heads.values()), ok=ok,
                   message=message, verdict=verdict, seconds=time.time() - start)
        rows.append(row)
        if log:
            log(row)
    return rows


def markdown(rows, kind):
    loss = ('a dense classification loss (FocalLoss, QualityFocalLoss, VarifocalLoss, '
            "a dense head's sigmoid CrossEntropyLoss, SSD's softmax)" if kind == 'det'
            else 'CrossEntropyLoss (softmax, or sigmoid: Fast-SCNN, binary heads)')
    passed = sum(r['ok'] for r in rows)
    out = [f'{passed} of {len(rows)} {"mmdet" if kind == "det" else "mmseg"} '
           f'{"detectors" if kind == "det" else "decode heads"} with {loss} train with '
           'DualFocalLoss', '', '| model | heads | config | result |', '|---|---|---|---|']
    for r in rows:
        message = ' '.join(r['message'].split()).replace('|', '/')
        result = 'ok' if r['ok'] else f"{r['verdict']}: {message}"
        out.append(f"| {r['model']} | {r['heads']} | `{r['config']}` | {result} |")
    return '\n'.join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', choices=['det', 'seg'])
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    for kind in ([args.only] if args.only else ['det', 'seg']):
        rows = sweep(kind, log=lambda r: print(
            f"{'ok  ' if r['ok'] else 'FAIL'} {r['seconds']:5.1f}s {r['config']}: "
            f"{r['verdict']}: {r['message']}", file=sys.stderr, flush=True))
        print(markdown(rows, kind) + '\n')


if __name__ == '__main__':
    main()
