"""Does DualFocalLoss work in every dense head? A sweep over the model zoos.

    python tools/analysis/head_sweep.py [--only det|seg] [--markdown]

Detection: every config shipped inside mmdet whose model uses ``FocalLoss``,
one per (detector, head) pair (the shortest config name of each, so schedule
and dataset variants count once). Segmentation: one config per mmseg model
folder whose decode head uses a softmax ``CrossEntropyLoss``, one per decode
head type. Each is switched to DualFocalLoss by ``dfl_mm.switch`` (the same
as ``tools/dfl_switch.py``), built, and trained one forward + backward step on
a tiny CPU batch (2 images of 128 x 128, 3 boxes each, or random label maps):
it passes when the loss is finite and every DualFocalLoss gets a finite
gradient on gamma. Prints one row per head and "N of M".
"""
import argparse
import glob
import os.path as osp
import re
import sys
import time
import traceback
from collections import OrderedDict

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

IMAGE = 128
# heads whose classification target is not a class label (out of scope), or
# which never call their loss_cls: found by the sweep, explained in the README
KNOWN_LIMITS = {}


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
        parts = path.split('.')[1:-1]  # drop 'model' and the loss key
        node, name = model, []
        for part in parts:
            node = node[int(part)] if part.isdigit() else node[part]
            name.append(part)
            if isinstance(node, dict) and 'type' in node and part.endswith('head'):
                heads['.'.join(name)] = node['type']
    return heads


def detection_candidates():
    """[(config, key, heads)] one per (detector type, heads with FocalLoss)."""
    from mmengine.config import Config

    from dfl_mm.switch import dfl_overrides
    root, files = _config_files('mmdet')
    chosen = OrderedDict()
    for path in files:
        if not _mentions(path, r"FocalLoss"):
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
        if key not in chosen or (len(rel), rel) < (len(chosen[key][0]), chosen[key][0]):
            chosen[key] = (rel, heads)
    return [(rel, key, heads) for key, (rel, heads) in chosen.items()]


def segmentation_candidates():
    """[(config, key, heads)] one per decode-head type with a softmax CE."""
    from mmengine.config import Config

    from dfl_mm.switch import dfl_overrides
    root, files = _config_files('mmseg')
    by_folder = OrderedDict()
    for path in files:
        folder = osp.relpath(path, root).split(osp.sep)[0]
        by_folder.setdefault(folder, []).append(path)
    chosen = OrderedDict()
    for folder, paths in by_folder.items():
        for path in sorted(paths, key=lambda p: (len(osp.basename(p)), p)):
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
            if key not in chosen:
                chosen[key] = (osp.relpath(path, root), heads)
            break
    return [(rel, key, heads) for key, (rel, heads) in chosen.items()]


def _switched(package, rel):
    from mmengine.config import Config

    from dfl_mm.switch import dfl_overrides
    cfg = Config.fromfile(osp.join(_configs_root(package), rel))
    overrides, _ = dfl_overrides(cfg)
    cfg.merge_from_dict(overrides, allow_list_keys=False)
    return cfg


def _gamma_grads(model):
    import dfl_mm
    losses = [m for m in model.modules() if isinstance(m, dfl_mm.DualFocalLoss)]
    grads = [None if m.gamma_logit.grad is None else float(m.gamma_logit.grad)
             for m in losses]
    return losses, grads


def _build(cfg, registry):
    from mmengine.model import revert_sync_batchnorm
    cfg.model.pop('pretrained', None)
    backbone = cfg.model.get('backbone')
    if backbone is not None:
        backbone.pop('init_cfg', None)
        backbone.pop('pretrained', None)
    return revert_sync_batchnorm(registry.build(cfg.model))


def check_detection(rel):
    """Train one step of ``rel`` (mmdet) with DFL: (ok, message)."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    cfg = _switched('mmdet', rel)
    model = _build(cfg, MODELS)
    model.train()
    heads = [m for m in model.modules() if hasattr(m, 'num_classes')]
    num_classes = heads[0].num_classes if heads else 80
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, IMAGE, IMAGE)] * 2,
                            num_items=[3, 3], num_classes=num_classes)
    data = model.data_preprocessor(packed, True)
    return _step(model, data)


def check_segmentation(rel):
    """Train one step of ``rel`` (mmseg) with DFL: (ok, message)."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    cfg = _switched('mmseg', rel)
    cfg.model.data_preprocessor.size = (IMAGE, IMAGE)
    model = _build(cfg, MODELS)
    model.train()
    num_classes = model.decode_head.num_classes
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(IMAGE, IMAGE),
                                             pad_shape=(IMAGE, IMAGE),
                                             ori_shape=(IMAGE, IMAGE)))
        labels = torch.randint(0, num_classes, (1, IMAGE, IMAGE))
        labels[:, :8] = 255
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    inputs = [torch.randint(0, 255, (3, IMAGE, IMAGE), dtype=torch.uint8) for _ in range(2)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    return _step(model, data)


def _step(model, data):
    import torch
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    total.backward()
    dfls, grads = _gamma_grads(model)
    if not torch.isfinite(total):
        return False, f'loss {float(total)}'
    if not dfls:
        return False, 'no DualFocalLoss in the built model'
    missing = sum(g is None for g in grads)
    if missing:
        return False, (f'{missing} of {len(dfls)} DualFocalLoss modules got no gradient on '
                       'gamma: the head does not call its loss_cls in training')
    if not all(torch.isfinite(torch.tensor(grads))):
        return False, f'gamma gradients {grads}'
    return True, f'loss {float(total):.3f}, {len(dfls)} DFL, gamma grad {grads[0]:+.2e}'


def sweep(kind, log=None):
    """Rows dict(config, model, heads, ok, message, seconds) of ``kind`` ('det'/'seg')."""
    candidates = detection_candidates() if kind == 'det' else segmentation_candidates()
    check = check_detection if kind == 'det' else check_segmentation
    rows = []
    for rel, (model_type, _), heads in candidates:
        start = time.time()
        try:
            ok, message = check(rel)
        except Exception as error:  # noqa: BLE001 - a failing head is a row, not a crash
            ok = False
            frame = traceback.extract_tb(error.__traceback__)[-1]
            message = (f'{type(error).__name__}: {str(error).splitlines()[0][:160]} '
                       f'({osp.basename(frame.filename)}:{frame.lineno})')
        row = dict(config=rel, model=model_type, heads=', '.join(heads.values()), ok=ok,
                   message=message, seconds=time.time() - start)
        rows.append(row)
        if log:
            log(row)
    return rows


def markdown(rows, kind):
    loss = 'FocalLoss' if kind == 'det' else 'softmax CrossEntropyLoss'
    passed = sum(r['ok'] for r in rows)
    out = [f'{passed} of {len(rows)} {"mmdet" if kind == "det" else "mmseg"} '
           f'{"detectors" if kind == "det" else "decode heads"} with {loss} train with '
           'DualFocalLoss', '', '| model | heads | config | result |', '|---|---|---|---|']
    for r in rows:
        out.append(f"| {r['model']} | {r['heads']} | `{r['config']}` | "
                   f"{'ok' if r['ok'] else 'FAILS: ' + r['message']} |")
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
            f"{r['message']}", file=sys.stderr, flush=True))
        print(markdown(rows, kind) + '\n')


if __name__ == '__main__':
    main()
