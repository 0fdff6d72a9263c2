"""Turn any mmdet/mmseg config into its DualFocalLoss version, without editing it.

``dfl_overrides(cfg)`` walks ``cfg.model`` and replaces

* every ``FocalLoss`` (mmdet's dense heads, DETR-style heads): by a sigmoid
  ``DualFocalLoss`` with gamma 2, the FocalLoss's own ``alpha`` (0.25 unless it
  sets another) and no class weights, the shipped detection setting
  (docs/results.md); probabilities stay probabilities (``activated``, TOOD);
* every ``QualityFocalLoss`` (GFL, TOOD, RTMDet, LD) and ``VarifocalLoss``
  (VFNet): by a sigmoid ``DualFocalLoss`` with gamma 2 at equal importance (no
  ``alpha``: neither has FocalLoss's balance), which takes their soft quality
  targets (``(labels, scores)`` / the IoU-aware map, with ``iou_weighted`` as
  VarifocalLoss's); not GFL's ``DistributionFocalLoss`` (box regression,
  mmdet's other "DFL");
* every sigmoid ``CrossEntropyLoss`` of a dense head (``model.rpn_head`` /
  ``model.bbox_head``: RPN's binary objectness, YOLOX's classes and
  objectness, YOLOv3's classes (``channels_last``: its (B, N, C) maps) and
  confidence): by the same equal-importance sigmoid ``DualFocalLoss``;
* mmdet's ``SSDHead``, whose softmax cross-entropy is hard-coded: by
  ``DFLSSDHead`` (``dfl_mm.models.heads``) with a softmax ``DualFocalLoss`` over the
  ``C + 1`` channels (gamma 2, no class weights: the background is a channel
  there) and SSD's own hard-negative mining;
* every sigmoid ``CrossEntropyLoss`` of an mmseg decode or auxiliary head
  (Fast-SCNN, binary heads): by the sigmoid ``DualFocalLoss`` at the CE's
  scale (``loss_weight`` over the channels; adaptive weights with more than
  one channel);
* every softmax ``CrossEntropyLoss`` of an mmseg decode or auxiliary head
  (``loss_decode``, a dict or a list of losses): by a softmax ``DualFocalLoss``
  with a learnable gamma and adaptive class weights (the shipped setting; it
  needs the head's ``num_classes``),

keeping each loss's ``loss_weight`` and ``reduction`` (and mmseg's
``loss_name``). The result
is a dict to merge into the config: each replaced loss carries
``_delete_=True`` (FocalLoss's ``alpha`` must not merge in), and a list on the
way to a loss (a cascade of decode heads, a list of losses) is given whole, as
mmengine replaces lists rather than merging them. ``tools/dfl_switch.py``
writes it as a config that inherits the original.
"""
import copy
from typing import List, Tuple

from ..models.presets import EQUAL_SIGMOID_DFL, SIGMOID_DFL, SOFTMAX_DFL, SSD_DFL

__all__ = ['dfl_overrides', 'derived_config_text', 'replacement_name', 'SIGMOID_DFL',
           'EQUAL_SIGMOID_DFL', 'SOFTMAX_DFL']

# loss keys of mmseg heads whose CrossEntropyLoss is a per-pixel softmax
SEG_LOSS_KEYS = ('loss_decode', )
# loss keys of mmdet heads whose FocalLoss scores the head's num_classes (TOOD's
# first epochs use initial_loss_cls)
DET_CLASS_LOSS_KEYS = ('loss_cls', 'initial_loss_cls')
# sigmoid classification losses of mmdet that DualFocalLoss replaces
DET_LOSSES = ('FocalLoss', 'QualityFocalLoss', 'VarifocalLoss')
# the dense heads of a detector and their classification keys, where a sigmoid
# CrossEntropyLoss classifies (DDOD's loss_iou regresses an IoU: not replaced)
DENSE_HEADS = ('rpn_head', 'bbox_head')
DENSE_CE_KEYS = ('loss_cls', 'loss_obj', 'loss_conf')
# dense heads whose class scores are (B, N, C) maps, classes last
CHANNELS_LAST_HEADS = ('YOLOV3Head', )
SSD_HEADS = ('SSDHead', )


def _type_name(loss) -> str:
    name = loss.get('type', '')
    return name.split('.')[-1] if isinstance(name, str) else getattr(name, '__name__', '')


def _sigmoid_seg_replacement(loss: dict, head: dict, adaptive: bool) -> dict:
    """A decode head's sigmoid CrossEntropyLoss (Fast-SCNN; binary heads with one
    output channel) as a sigmoid DualFocalLoss of the same scale: mmseg's sigmoid CE
    averages over pixels x channels, DualFocalLoss over pixels (its classes summed),
    so ``loss_weight`` is divided by the channels."""
    channels = head.get('out_channels', head.get('num_classes')) or 1
    new = dict(EQUAL_SIGMOID_DFL, avg_non_ignore=loss.get('avg_non_ignore', False))
    if adaptive and channels > 1:  # segmentation's default; one channel: no classes
        new.update(class_weight='adaptive', num_classes=channels)
    if 'loss_name' in loss:
        new['loss_name'] = loss['loss_name'].replace('_ce', '_dfl')
    new['loss_weight'] = loss.get('loss_weight', 1.0) / channels
    return new


def _dense_sigmoid_ce(loss: dict, head: dict, path) -> bool:
    """Whether ``loss`` is a classifying sigmoid CrossEntropyLoss of a detector's
    dense head."""
    return (_type_name(loss) == 'CrossEntropyLoss' and loss.get('use_sigmoid', False)
            and not loss.get('use_mask', False) and len(path) >= 3
            and path[1] in DENSE_HEADS and path[-1] in DENSE_CE_KEYS)


def _replacement(loss: dict, key: str, head: dict, adaptive: bool, path=()):
    """The DFL dict replacing ``loss`` (the value of ``key`` in ``head``), or None."""
    kind = _type_name(loss)
    if ((kind in DET_LOSSES and loss.get('use_sigmoid', True))
            or _dense_sigmoid_ce(loss, head, path)):
        if kind == 'FocalLoss':  # detection's default: FocalLoss's balance, no class weights
            new = dict(SIGMOID_DFL, alpha=loss.get('alpha', SIGMOID_DFL['alpha']))
        else:
            new = dict(EQUAL_SIGMOID_DFL)
        if loss.get('activated', False):
            new['activated'] = True
        if kind == 'VarifocalLoss' and loss.get('iou_weighted', True):
            new['iou_weighted'] = True
        if _type_name(head) in CHANNELS_LAST_HEADS and key in DET_CLASS_LOSS_KEYS:
            new['channels_last'] = True
    elif (kind == 'CrossEntropyLoss' and key in SEG_LOSS_KEYS
          and not loss.get('use_sigmoid', False) and not loss.get('use_mask', False)):
        new = dict(SOFTMAX_DFL)
        if adaptive and head.get('num_classes'):
            new['num_classes'] = head['num_classes']
        elif loss.get('class_weight') is not None:
            raise ValueError(
                f"{'.'.join(path)}: CrossEntropyLoss's class_weight weighs the pixels "
                "labelled c; DualFocalLoss's static class_weight weighs the class-c element "
                'of every pixel, another meaning: switch with adaptive weights (placed per '
                'pixel by its label, as CE places its weights) or write the loss yourself')
        else:
            new.pop('class_weight')
        if 'loss_name' in loss:
            new['loss_name'] = loss['loss_name'].replace('_ce', '_dfl')
    elif (kind == 'CrossEntropyLoss' and key in SEG_LOSS_KEYS and loss.get('use_sigmoid')
          and not loss.get('use_mask', False)):
        return _sigmoid_seg_replacement(loss, head, adaptive)
    else:
        return None
    new['loss_weight'] = loss.get('loss_weight', 1.0)
    if 'reduction' in loss:  # FSAF reduces the element map itself ('none')
        new['reduction'] = loss['reduction']
    return new


def _walk(node, key, parent, adaptive, path, found) -> Tuple[object, bool]:
    """(override of ``node``, whether anything under it changed)."""
    if isinstance(node, dict):
        if 'type' in node and key is not None:
            new = _replacement(node, key, parent, adaptive, path)
            if new is not None:
                found.append(('.'.join(path), _type_name(node)))
                return dict(_delete_=True, **new), True
            if _type_name(node) in SSD_HEADS:  # its CE is code, not config: a head that takes one
                found.append(('.'.join(path), _type_name(node)))
                return dict(type='DFLSSDHead', loss_cls=dict(SSD_DFL)), True
        out, changed = {}, False
        for k, v in node.items():
            sub, sub_changed = _walk(v, k, node, adaptive, path + [k], found)
            if sub_changed:
                out[k], changed = sub, True
        return out, changed
    if isinstance(node, (list, tuple)):
        items, changed = [], False
        for i, item in enumerate(node):
            sub, sub_changed = _walk(item, key, parent, adaptive, path + [str(i)], found)
            if sub_changed:
                changed = True
                # a list is replaced whole: the full item, with its losses replaced
                sub = _merged(item, sub)
            items.append(sub if sub_changed else copy.deepcopy(_plain(item)))
        return type(node)(items) if isinstance(node, tuple) else items, changed
    return node, False


def _plain(node):
    """ConfigDict -> dict, recursively (so the override prints as plain Python)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_plain(v) for v in node)
    return node


def _merged(item, override):
    """``item`` with ``override`` applied (``_delete_`` dicts replace, others merge)."""
    if not isinstance(item, dict) or not isinstance(override, dict):
        return override
    if override.get('_delete_'):
        return {k: v for k, v in override.items() if k != '_delete_'}
    out = _plain(item)
    for k, v in override.items():
        out[k] = _merged(item.get(k), v) if isinstance(v, dict) else v
    return out


def dfl_overrides(cfg, adaptive: bool = True) -> Tuple[dict, List[Tuple[str, str]]]:
    """What to merge into ``cfg`` to train it with DualFocalLoss.

    Args:
        cfg (mmengine.Config | dict): a full (merged) config with ``model``.
        adaptive (bool): adaptive class weights on the segmentation heads (their
            shipped setting; a head without ``num_classes`` gets none). Detection
            heads get none either way (the shipped detection setting).

    Returns:
        (overrides, replaced): ``overrides`` has ``model`` (the new losses),
        ``custom_imports``, ``custom_hooks`` (``DFLStepHook`` added) and an
        ``optim_wrapper`` that exempts gamma from weight decay; ``replaced``
        lists (path, old loss type). Empty overrides when nothing is replaced.
    """
    found: List[Tuple[str, str]] = []
    if not isinstance(cfg.get('model'), dict):  # a dataset or runtime base: no model
        return {}, []
    model, changed = _walk(cfg['model'], None, None, adaptive, ['model'], found)
    if not changed:
        return {}, []
    imports = list(cfg.get('custom_imports', {}).get('imports', []))
    from ..engine.hooks import has_step_hook
    hooks = [_plain(h) for h in cfg.get('custom_hooks', [])]
    if not has_step_hook(hooks):
        hooks.append(dict(type='DFLStepHook'))
    overrides = dict(
        model=model,
        custom_imports=dict(imports=imports + ['dfl_mm'] * ('dfl_mm' not in imports),
                            allow_failed_imports=False),
        custom_hooks=hooks,
        optim_wrapper=dict(paramwise_cfg=dict(
            custom_keys={'gamma_logit': dict(decay_mult=0.0)})))
    return overrides, found


def replacement_name(old: str) -> str:
    """What replaces a loss or head of type ``old``."""
    return 'DFLSSDHead' if old in SSD_HEADS else 'DualFocalLoss'


def derived_config_text(base: str, overrides: dict, replaced) -> str:
    """A config file that inherits ``base`` (a path, or ``package::path``) and
    applies ``overrides``."""
    import pprint
    lines = [f'# {base} with DualFocalLoss (written by tools/dfl_switch.py)',
             *[f'#   {path}: {old} -> {replacement_name(old)}' for path, old in replaced],
             f'_base_ = {base!r}', '']
    for key, value in overrides.items():
        lines.append(f'{key} = {pprint.pformat(value, width=90, sort_dicts=False)}')
    return '\n'.join(lines) + '\n'
