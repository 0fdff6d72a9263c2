"""The checks of settings and call arguments, with the messages users see.

``DualFocalLoss`` checks its settings here at construction; a call is checked
once, by ``functional.parse`` (after the module's conventions, which read only
what ``check_call`` checked). Value checks of
tensors are gathered by ``Checks`` and read with one host sync per call; under
``torch.compile`` those that need a sync are skipped. torch and numpy only
(mmengine's file loader is imported for a .pkl/.json/.yaml class-weight file).
"""
import math
import numbers
import operator
import os
from typing import Optional

import numpy as np
import torch
from torch import Tensor

REDUCTIONS = ('none', 'mean', 'sum')
# where a (C,) class_weight applies: every row's class-c element, every element of
# the rows labelled c, or only the labelled class's element of those rows
CLASS_WEIGHT_MODES = ('element', 'row', 'positive')
# the published forms: arXiv 1909.11932 (the default, every backend) and the
# authors' Neurocomputing 2021 paper (the reference backend's torch ops only)
FORMS = ('arxiv2019', 'neurocomputing2021')


def check_setting(name, value, ok, expected, kind=None) -> None:
    """Raise TypeError unless ``value`` is a real number (``{name} must be {kind}``,
    default ``expected``), ValueError unless ``ok(value)`` (``{name} must be
    {expected}``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be {kind or expected}, got {type(value).__name__} '
                        f'{value!r}')
    if math.isnan(value) or not ok(value):
        raise ValueError(f'{name} must be {expected}, got {value}')


def check_number(name, value, low, high, low_open=True):
    """Raise unless ``value`` is a number in ``(low, high]`` (``[low, high]``)."""
    def within(v):
        return (v > low if low_open else v >= low) and v <= high

    check_setting(name, value, within, f"in {'(' if low_open else '['}{low}, {high}]",
                  kind='a number')


def check_choice(name, value, choices) -> None:
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')


def check_positive_int(name, value, optional=False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')


class Checks:
    """Checks of tensor values, resolved together with one host sync.

    On CUDA every ``.item()`` stalls the stream; a call's checks (labels in
    range, gamma, class weights, float targets) are gathered and read at once.
    """

    def __init__(self):
        self._parts, self._verdicts = [], []

    def add(self, part: Tensor, verdict) -> None:
        """``verdict(values)`` raises if ``part``'s values (a list) are bad."""
        self._parts.append(part.detach().reshape(-1).to(torch.float64))
        self._verdicts.append(verdict)

    def run(self) -> None:
        if not self._parts:
            return
        device = self._parts[0].device
        values = torch.cat([p.to(device) for p in self._parts]).tolist()  # the one sync
        start = 0
        for part, verdict in zip(self._parts, self._verdicts):
            verdict(values[start:start + part.numel()])
            start += part.numel()


def check_label_range(labels, channels, use_sigmoid, ignore_index=None,
                      checks: Optional[Checks] = None) -> None:
    """Raise ValueError for labels outside ``0..C-1`` (and ``C``, the background, in
    sigmoid mode), ``ignore_index`` aside: at ``checks.run()``, or at once without
    ``checks``. Nothing is read inside a compiled graph."""
    if labels.numel() == 0 or torch.compiler.is_compiling():
        return
    high = channels if use_sigmoid else channels - 1
    masked = labels if ignore_index is None else labels.masked_fill(labels == ignore_index, 0)

    def verdict(lo_hi):
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        if lo < 0 or hi > high:
            meaning = (f'0..{channels - 1} for classes and {channels} for background'
                       if use_sigmoid else f'0..{channels - 1}')
            raise ValueError(f'label {lo if lo < 0 else hi} out of range: expected {meaning}'
                             + (f' or ignore_index={ignore_index}'
                                if ignore_index is not None else ''))

    lo_hi = torch.stack(torch.aminmax(masked))
    if checks is None:
        verdict(lo_hi.tolist())
    else:
        checks.add(lo_hi, verdict)


def check_values(name, values: Tensor, expected: str, low, high=math.inf, low_open=True,
                 checks: Optional[Checks] = None):
    """Raise ValueError unless every value is finite and in the interval.

    NaN fails every comparison, so it is caught with the out-of-range values.
    With ``checks`` the verdict waits for ``checks.run()`` (one sync for all).
    Inside a compiled graph nothing is checked (the verdict would need the host).
    """
    if torch.compiler.is_compiling():
        return
    values = values.detach()
    ok = (values > low if low_open else values >= low) & (values <= high) & values.isfinite()

    def verdict(flag):
        if not flag[0]:
            shown = values.flatten()[:10].tolist()
            raise ValueError(f'{name} must be {expected}, got {shown}'
                             + (' ...' if values.numel() > 10 else ''))

    own = checks or Checks()
    own.add(ok.all(), verdict)
    if checks is None:
        own.run()


def check_ignore_index(ignore_index) -> Optional[int]:
    """``ignore_index`` as a Python int (a numpy integer too), or None.

    Raises:
        TypeError: anything else (a bool, a float, a tensor).
    """
    if ignore_index is None:
        return None
    if not isinstance(ignore_index, (bool, float, Tensor)):
        try:  # numpy integers too: under torch.compile they are no numbers.Integral
            return operator.index(ignore_index)
        except TypeError:
            pass
    raise TypeError(f'ignore_index must be an int or None, got '
                    f'{type(ignore_index).__name__} {ignore_index!r}')


def check_no_grad(name: str, value: Tensor) -> None:
    """Raise ValueError for a ``target`` / ``weight`` that requires grad: the loss
    gives them no gradient, and a silent zero would pass for one."""
    if value.requires_grad:
        raise ValueError(f'{name} requires grad, but DualFocalLoss gives no gradient to '
                         f'its {name}: pass {name}.detach() (targets and weights are '
                         'data, as in mmdet\'s and mmseg\'s losses)')


def check_label_dtype(target: Tensor, ignore_index) -> None:
    """Raise ValueError if integer labels cannot hold ``ignore_index``.

    torch compares ``uint8 == -1`` as 255, the C kernel in int64: refusing the
    value gives one rule on every backend instead of two answers.
    """
    if ignore_index is None or target.is_floating_point() or target.dtype == torch.bool:
        return
    info = torch.iinfo(target.dtype)
    if not info.min <= ignore_index <= info.max:
        raise ValueError(f'ignore_index={ignore_index} cannot occur in {target.dtype} labels '
                         f'(values {info.min}..{info.max}): use an ignore_index in that range '
                         'or int64 labels')


def check_form(form, alpha, beta, rho) -> Optional[float]:
    """Check a form and its settings; the Neurocomputing form's ``alpha`` (1 when
    None), or None for the default form (whose ``beta`` and ``rho`` must stay 1)."""
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    if torch.compiler.is_compiling():  # checked eagerly (the module: at construction)
        return None if form == 'arxiv2019' else (1.0 if alpha is None else alpha)
    if form == 'arxiv2019':
        if beta != 1.0 or rho != 1.0:
            raise ValueError(f"beta and rho are settings of form='neurocomputing2021', "
                             f'got beta={beta!r}, rho={rho!r} with the default form')
        return None
    alpha = 1.0 if alpha is None else alpha
    for name, value, low in (('alpha', alpha, -math.inf), ('beta', beta, 0), ('rho', rho, 1)):
        check_number(name, value, low, math.inf, low_open=False)
        if not math.isfinite(value):
            raise ValueError(f'{name} must be a finite number, got {value}')
    return float(alpha)


def check_tensor(name, value, expected):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of {expected}, '
                        f'got {type(value).__name__}')


def check_mode(use_sigmoid, alpha) -> None:
    """``use_sigmoid`` a bool; ``alpha`` (the sigmoid positives' weight) None or in [0, 1]."""
    if not isinstance(use_sigmoid, bool):
        raise TypeError(f'use_sigmoid must be True or False, got {use_sigmoid!r}')
    if alpha is not None:
        if not use_sigmoid:
            raise ValueError('alpha is a sigmoid-mode option (use_sigmoid=True); '
                             'use class_weight in softmax mode')
        check_number('alpha', alpha, 0, 1, low_open=False)


def check_reduction(reduction, name='reduction', optional=False) -> None:
    """``reduction`` one of ``REDUCTIONS`` (or None when ``optional``)."""
    if reduction in REDUCTIONS or (optional and reduction is None):
        return
    raise ValueError(f"{name} must be {'None or ' if optional else ''}one of {REDUCTIONS}, "
                     f"got '{reduction}'")


def check_call_options(logits, target, *, use_sigmoid, alpha, reduction, avg_factor,
                       class_weight_mode) -> None:
    """Raise TypeError / ValueError naming the first bad argument of ``dual_focal_loss``
    that needs no tensor value (those go through ``Checks``)."""
    check_tensor('logits', logits, 'floats of shape (N, C) or (B, C, ...)')
    check_tensor('target', target, 'integer labels or float targets')
    check_no_grad('target', target)
    check_mode(use_sigmoid, alpha)
    if class_weight_mode not in CLASS_WEIGHT_MODES:
        raise ValueError(f'class_weight_mode must be one of {CLASS_WEIGHT_MODES}, got '
                         f'{class_weight_mode!r}')
    if not logits.is_floating_point():
        raise TypeError(f'logits must be a floating point tensor, got {logits.dtype}')
    if logits.dim() < 2:
        raise ValueError(f'logits must have shape (N, C) or (B, C, ...), got '
                         f'{tuple(logits.shape)}')
    check_reduction(reduction)
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if not use_sigmoid and logits.shape[1] < 2:
        raise ValueError(
            f'softmax mode needs at least 2 channels, got logits of shape '
            f'{tuple(logits.shape)}; use use_sigmoid=True for a binary head '
            'with one output channel')


def check_moved(settings: dict) -> None:
    """Unknown ``DualFocalLoss`` arguments: a TypeError, naming the new spelling of the
    Neurocomputing form's (its own loss since issue 36)."""
    if not settings:
        return
    if {'form', 'beta', 'rho'} & set(settings):
        raise TypeError(f"DualFocalLoss got {sorted(settings)}: the Neurocomputing 2021 form "
                        "is its own loss, type='NeurocomputingDualFocalLoss' with alpha, "
                        "beta and rho (form='arxiv2019' is DualFocalLoss itself)")
    raise TypeError(f'DualFocalLoss got unexpected arguments {sorted(settings)}')


def check_settings(*, use_sigmoid, num_classes, reduction, alpha, loss_name, loss_weight,
                   ignore_index, avg_non_ignore, activated=False, iou_weighted=False,
                   channels_last=False) -> None:
    """Raise TypeError / ValueError naming the first bad ``DualFocalLoss`` setting."""
    for name, value in (('activated', activated), ('iou_weighted', iou_weighted),
                        ('channels_last', channels_last), ('avg_non_ignore', avg_non_ignore)):
        if not isinstance(value, bool):
            raise TypeError(f'{name} must be True or False, got {value!r}')
    if activated and not use_sigmoid:
        raise ValueError('activated=True takes sigmoid probabilities (use_sigmoid=True)')
    check_positive_int('num_classes', num_classes, optional=True)
    check_reduction(reduction)
    check_mode(use_sigmoid, alpha)
    if not isinstance(loss_name, str) or not loss_name.startswith('loss_'):
        raise ValueError(f"loss_name must be a str starting with 'loss_' (mmseg "
                         f'only backpropagates such keys), got {loss_name!r}')
    check_number('loss_weight', loss_weight, -math.inf, math.inf)
    if not math.isfinite(loss_weight):
        raise ValueError(f'loss_weight must be a finite number, got {loss_weight}')
    check_ignore_index(ignore_index)


def check_gamma_scale(gamma_ceiling, gamma_scale, gamma_max, form='arxiv2019') -> None:
    """The adaptive per-class exponents must stay within the functional's bound, and
    exist only in the default form: in the Neurocomputing form the exponent enters
    as ``- alpha |y - p|^gamma``, where a larger gamma makes a rare class's easy
    negatives weigh more, the opposite of what ``gamma_scale`` is for."""
    if gamma_scale and form != 'arxiv2019':
        raise ValueError(f'adaptive_weight gamma_scale={gamma_scale} is an option of '
                         f"DualFocalLoss's form only: in the {form} form a larger per-class "
                         "gamma weighs that class's easy negatives more, not less")
    highest = gamma_ceiling + gamma_scale
    if gamma_scale and highest > gamma_max:
        raise ValueError(f'adaptive_weight gamma_scale={gamma_scale} would raise gamma to '
                         f'{highest}; gamma (or gamma_max) + gamma_scale must be '
                         f'<= {gamma_max}')


def check_call(pred, target, reduction_override, extra: dict) -> None:
    """Raise TypeError / ValueError naming the first bad argument of a module call
    that its conventions read first (the rest: ``functional.parse``)."""
    check_reduction(reduction_override, 'reduction_override', optional=True)
    if extra:
        raise TypeError(f'DualFocalLoss got unexpected arguments {sorted(extra)}')
    if not isinstance(pred, Tensor):
        raise TypeError(f'pred must be a torch.Tensor, got {type(pred).__name__}')
    if not isinstance(target, Tensor):
        raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')


CLASS_WEIGHT_FILES = ('.npy', '.pkl', '.pickle', '.json', '.yaml', '.yml')


def load_class_weight(class_weight, num_classes=None) -> Optional[list]:
    """Class weights from a list or a file (.npy, or .pkl/.json/.yaml), as in mmseg;
    ``num_classes`` of them when it is given."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if not class_weight.endswith(CLASS_WEIGHT_FILES):
            raise ValueError(f"class_weight must be 'adaptive', a list of numbers or a path "
                             f'to a {"/".join(CLASS_WEIGHT_FILES)} file, got {class_weight!r}')
        if '://' not in class_weight and not os.path.isfile(class_weight):
            raise ValueError(f'class_weight file {class_weight!r} does not exist')
        source = f'class_weight file {class_weight!r}'
        if class_weight.endswith('.npy'):
            class_weight = np.load(class_weight, allow_pickle=False)
        else:
            from mmengine.fileio import load
            class_weight = load(class_weight)
    else:
        source = 'class_weight'
    values = _flat_numbers(class_weight, source)
    if not values:
        raise ValueError('class_weight must be non-negative finite numbers, got []')
    check_values('class_weight', torch.tensor(values, dtype=torch.float64),
                 'non-negative finite numbers', 0, low_open=False)
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(f'class_weight has {len(values)} values, expected '
                         f'num_classes={num_classes}')
    return values


def _flat_numbers(values, source: str) -> list:
    """One flat list of real numbers, or a TypeError / ValueError naming ``source``:
    no strings parsed as numbers, no complex part dropped, no nesting flattened."""
    expected = 'a list of numbers (real, one per class, not nested)'
    if isinstance(values, (Tensor, np.ndarray)):
        kind = values.dtype.kind if isinstance(values, np.ndarray) else (
            'c' if values.is_complex() else 'b' if values.dtype == torch.bool else 'f')
        if kind not in 'iuf':
            raise TypeError(f'{source} must be {expected}, got an array of {values.dtype}')
        if values.ndim != 1:
            raise ValueError(f'{source} must be {expected}, got an array of shape '
                             f'{tuple(values.shape)}')
        return [float(v) for v in values.tolist()]
    if not isinstance(values, (list, tuple)):
        raise TypeError(f'{source} must be {expected}, got {type(values).__name__} '
                        f'{values!r}'[:300])
    for value in values:
        if isinstance(value, (list, tuple, dict, np.ndarray, Tensor)):
            raise ValueError(f'{source} must be {expected}, got a nested '
                             f'{type(value).__name__}: {value!r}'[:300])
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f'{source} must be {expected}, got '
                            f'{type(value).__name__} {value!r}'[:300])
    return [float(v) for v in values]


def check_binary_labels(labels: Tensor, valid: Optional[Tensor]) -> None:
    """Raise ValueError unless a binary head's labels (where valid) are 0 or 1."""
    if torch.compiler.is_compiling():  # a host sync: not inside a compiled graph
        return
    checked = labels if valid is None else labels[valid]
    if checked.numel() and (checked.min() < 0 or checked.max() > 1):
        raise ValueError(
            'a binary head (one output channel, use_sigmoid=True) takes labels '
            f'0 (background) and 1 (foreground), got values in '
            f'[{int(checked.min())}, {int(checked.max())}]')
