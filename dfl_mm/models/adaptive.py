"""Adaptive class weights: running class statistics turned into weights.

``DualFocalLoss(class_weight='adaptive', num_classes=C)`` holds one
:class:`AdaptiveClassWeight`. It keeps, per class ``c``, an exponential
moving average of how many training targets of class ``c`` the loss has seen
(``counts``) and, for the 'recall' basis, how many of them the model already
got right (``hits``), and turns them into weights:

.. math::

    f_c = \\frac{n_c}{\\sum_k n_k},\\qquad
    w_c \\propto (f_c + \\epsilon)^{-\\mathrm{power}}\\ \\text{(frequency)},\\quad
    w_c \\propto (1 - r_c + \\epsilon)^{\\mathrm{power}}\\ \\text{(recall)},\\quad
    w_c \\propto \\Big(\\frac{1 - \\beta}{1 - \\beta^{N_c}}\\Big)^{\\mathrm{power}}
    \\ \\text{(effective)}

normalised over the classes seen so far so that the average weight of what
they multiply is 1 (``normalise='mean'``; per row: ``sum_c f_c w_c = 1``; per
element: their mean is 1) or so that the least weight is 1 (``normalise='head'``:
the most frequent class keeps its weight, no class weighs less than without
weights), and clipped to ``[1 / max_weight, max_weight]``. ``apply_to``: 'row'
(the weight of a labelled row's class multiplies its every element),
'positive' (only its labelled class's element: the false-class elements keep
weight 1) or 'element' (the class-c element of every row).

``gamma_scale = s > 0`` also gives each class its own focusing exponent from
the same statistics (the insight of the Equalized Focal Loss, with the running
frequency in place of its gradient ratio):

.. math:: \\gamma_c = \\gamma + s\\,(1 - f_c / \\max_k f_k)

so a rare class's channel focuses harder and its flood of easy negatives
weighs less; an unseen class keeps ``gamma``. A class with no
information (never counted, ``f_c = 0``) weighs 1, the average; with nothing
counted at all (no step yet, or only steps whose rows were all ignored or
background) every weight is 1, so the loss keeps the unweighted scale.

What one update is: the weights used in a training step come from the steps
before it, never from the batch at hand. Inside an mmengine runner with
``DFLStepHook`` (``tools/train.py`` adds it) the counts of every call of one
iteration (a RetinaNet head calls its loss once per FPN level) are summed and
folded into the averages once, at the end of the iteration, so the statistics
and the weights do not depend on how many calls make a step, and every FPN
level of a step uses the same weights; an iteration that raises is discarded.
Without the hook (a plain PyTorch loop, a runner built without it) every
training call is one step. Under DDP the counts of a step are all-reduced at
that fold (one collective of ``2 * C`` numbers per step), so every rank holds
identical weights.

Which calls count: those that train, i.e. the module is in ``train()`` mode and
autograd is recording (``torch.is_grad_enabled()``). Evaluation and mmseg's
``OHEMPixelSampler``, which ranks pixels by calling the loss under ``no_grad``,
are not counted.

All state is in persistent buffers (checkpointed, restored exactly by
``--resume``, never seen by the optimizer); a step is always folded before a
checkpoint is written (by the hook, or at once without it), so a checkpoint
holds the whole state. The open step's counts are a plain tensor, not a buffer:
DDP's ``broadcast_buffers`` would otherwise overwrite every rank's counts with
rank 0's before the fold. A call that raises changes nothing (``DualFocalLoss``
counts a call only once its loss has been computed). Counting, folding and the
weights are tensor ops with fixed shapes and no host read: the module compiles
into one graph with ``torch.compile(fullgraph=True, dynamic=True)``.
"""
import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..core.checks import check_choice, check_setting

__all__ = ['AdaptiveClassWeight', 'ADAPTIVE_DEFAULTS', 'build_adaptive', 'frequency_weights',
           'normalise_weights']

BASES = ('frequency', 'recall', 'effective')
APPLY_TO = ('row', 'element', 'positive')
_TINY = torch.finfo(torch.float64).tiny
NORMALISE = ('mean', 'head')
# Defaults from the sweep in tools/benchmarks/benchmark_efficacy.py (docs/loss.md, "Adaptive
# class weights").
ADAPTIVE_DEFAULTS = dict(basis='frequency', power=0.5, momentum=0.99,
                         max_weight=10.0, apply_to='row', eps=1e-4, effective_beta=0.9999,
                         normalise='mean', gamma_scale=0.0)


class AdaptiveClassWeight(nn.Module):
    """Running per-class statistics and the weights derived from them.

    Args:
        num_classes (int): number of classes C.
        basis (str): 'frequency' (rare classes weigh more) or 'recall'
            (classes the model still misses weigh more; Recall Loss, Tian et
            al. 2021), or 'effective' (the inverse effective number of
            samples, Cui et al. 2019, with ``N_c = counts_c / (1 - momentum)``:
            the class's targets within the average's window). Default:
            'frequency'.
        power (float): exponent of the weight function, >= 0 (0: all ones).
        momentum (float): EMA factor per step, in [0, 1) (0: the last step only).
        max_weight (float): weights are clipped to [1 / max_weight, max_weight];
            >= 1.
        apply_to (str): 'row' (a row is weighted by its target's class, as
            mmseg's CE ``class_weight``), 'positive' (only the target class's
            element of such a row) or 'element' (the class-c element of
            every row, as DFL's static ``class_weight``).
        eps (float): added to the frequency (or to 1 - recall), > 0.
        effective_beta (float): the 'effective' basis's beta, in [0, 1).
        normalise (str): 'mean' (the average weight is 1) or 'head' (the
            least weight is 1).
        gamma_scale (float): s >= 0 of the per-class exponent offsets
            ``s (1 - f_c / max f)`` (0: none).

    Buffers:
        counts (C,) float64: EMA of the per-step count of targets per class.
        hits (C,) float64: EMA of those predicted right (recall basis).
        steps (int64): number of folded steps.

    The open step's raw counts and hits, (2, C) float64, are kept outside the
    buffers (not saved, not broadcast by DDP).
    """

    def __init__(self, num_classes: int, basis: str = 'frequency',
                 power: float = 0.5, momentum: float = 0.99,
                 max_weight: float = 10.0, apply_to: str = 'row',
                 eps: float = 1e-4, effective_beta: float = 0.9999, normalise: str = 'mean',
                 gamma_scale: float = 0.0):
        super().__init__()
        for name, value, choices in (('basis', basis, BASES), ('apply_to', apply_to, APPLY_TO),
                                     ('normalise', normalise, NORMALISE)):
            check_choice(f'adaptive_weight {name}', value, choices)
        for name, value, ok, expected in (
                ('power', power, lambda v: 0 <= v < math.inf, 'a number >= 0'),
                ('gamma_scale', gamma_scale, lambda v: 0 <= v <= 20, 'a number in [0, 20]'),
                ('momentum', momentum, lambda v: 0 <= v < 1, 'a number in [0, 1)'),
                ('max_weight', max_weight, lambda v: 1 <= v < math.inf, 'a number >= 1'),
                ('eps', eps, lambda v: 0 < v < math.inf, 'a number > 0'),
                ('effective_beta', effective_beta, lambda v: 0 <= v < 1, 'a number in [0, 1)')):
            check_setting(f'adaptive_weight {name}', value, ok, expected)
        self.num_classes = num_classes
        self.basis, self.apply_to = basis, apply_to
        self.power, self.momentum = float(power), float(momentum)
        self.max_weight, self.eps = float(max_weight), float(eps)
        self.effective_beta = float(effective_beta)
        self.normalise, self.gamma_scale = normalise, float(gamma_scale)
        zeros = torch.zeros(num_classes, dtype=torch.float64)
        self.register_buffer('counts', zeros.clone())
        self.register_buffer('hits', zeros.clone())
        self.register_buffer('steps', torch.zeros((), dtype=torch.int64))
        # counts and hits of the step in progress, and the number of its calls;
        # not buffers (see above): moved with the module by _apply
        self._pending = torch.zeros(2, num_classes, dtype=torch.float64)
        self._calls = torch.zeros((), dtype=torch.int64)
        self._by_hook = False  # a hook's step is open: it folds at the step's end
        self._weights = None  # cache (eager): the weights change only when a step folds

    @property
    def needs_hits(self) -> bool:
        return self.basis == 'recall'

    def frequency(self) -> Tensor:
        """(C,) running share of each class among the targets (0 before any step)."""
        return self.counts / self.counts.sum().clamp(min=torch.finfo(torch.float64).tiny)

    def recall(self) -> Tensor:
        """(C,) running share of each class's targets predicted right."""
        return torch.where(self.counts > 0, self.hits / self.counts.clamp(min=1e-30), 0.0)

    def weights(self) -> Tensor:
        """(C,) float32 weights from the folded statistics (ones before any).

        .. math:: w = \\mathrm{clip}(r / \\langle r \\rangle, 1/M, M)
        """
        if torch.compiler.is_compiling():  # no cache inside a graph: tensor ops only
            return self._compute_weights()
        if self._weights is None or self._weights.device != self.counts.device:
            self._weights = self._compute_weights()
        return self._weights

    def _compute_weights(self) -> Tensor:
        """In log space: no setting the constructor accepts overflows (``eps=1e-160,
        power=80``); nothing counted gives frequencies of 0, hence weights of 1."""
        if self.power == 0:
            return torch.ones(self.num_classes, device=self.counts.device)
        freq = self.frequency()
        if self.basis == 'frequency':
            log_raw = -self.power * torch.log(freq + self.eps)
        elif self.basis == 'recall':
            log_raw = self.power * torch.log(1 - self.recall() + self.eps)
        else:  # (1 - beta) / (1 - beta^N); an unseen class (N = 0) weighs 1 below
            window = (self.counts / (1 - self.momentum)).clamp(min=1)
            beta = self.effective_beta
            log_beta = math.log(beta) if beta > 0 else -math.inf
            log_raw = self.power * (math.log1p(-beta)
                                    - torch.log(-torch.expm1(window * log_beta)))
        return normalise_weights(log_raw, freq, self.apply_to, self.max_weight,
                                 log_space=True, normalise=self.normalise).float()

    def gamma_offsets(self) -> Optional[Tensor]:
        """(C,) float32 ``s (1 - f_c / max f)`` added to the exponent (0 for an
        unseen class, and before any step), or None when ``gamma_scale`` is 0."""
        if self.gamma_scale == 0:
            return None
        freq = self.frequency()
        relative = freq / freq.max().clamp(min=torch.finfo(torch.float64).tiny)
        return torch.where(freq > 0, self.gamma_scale * (1 - relative), 0.0).float()

    def weights_for(self, pred: Tensor, target: Tensor):
        """A loss call's (C,) weights, on ``pred``'s device, and where they apply.

        The weights come from the steps before this call, never from its batch.
        """
        if pred.shape[1] != self.num_classes:
            raise ValueError(f'pred has {pred.shape[1]} channels, but the adaptive weights '
                             f'were built for num_classes={self.num_classes}')
        return self.weights().to(pred.device), self.apply_to

    @property
    def pending(self) -> Tensor:
        """(2, C) float64: the open step's raw counts and hits (zeros if none)."""
        return self._pending

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self._pending = self._pending.to(self.counts.device)
        self._calls = self._calls.to(self.counts.device)
        self._weights = None
        return self

    def begin_step(self) -> None:
        """A hook opens a step: the calls until :meth:`end_step` are one step."""
        self.abort_step()
        self._by_hook = True

    def abort_step(self) -> None:
        """Drop the open step's counts (its iteration raised): nothing changes."""
        self._pending.zero_()
        self._calls.zero_()
        self._by_hook = False

    def observe(self, labels: Tensor, hits: Optional[Tensor] = None) -> None:
        """Add one call's targets to the current step (fixed shapes, no host read).

        Args:
            labels (Tensor): class ids of the rows, any shape; ids outside
                [0, C) are not counted.
            hits (Tensor, optional): bool, like ``labels``: predicted right.
        """
        C = self.num_classes
        with torch.no_grad():
            labels = labels.reshape(-1).long()
            counted = (labels >= 0) & (labels < C)
            slot = torch.where(counted, labels, C)  # slot C: not counted
            rows = torch.ones_like(slot, dtype=torch.float64)
            pending = torch.zeros(2, C + 1, dtype=torch.float64, device=labels.device)
            pending[0].index_add_(0, slot, rows)
            if hits is not None:
                pending[1].index_add_(0, slot, hits.reshape(-1).to(torch.float64))
            self._pending.add_(pending[:, :C].to(self._pending.device))
            self._calls.add_(1)
        if not self._by_hook:  # no hook's step: every call is a step
            self._fold()

    def count(self, pred: Tensor, labels: Tensor, ignore_index, use_sigmoid: bool) -> None:
        """Add a loss call's labelled rows (and, for 'recall', their hits) to the step.

        Args:
            pred (Tensor): (N, C) or (B, C, ...) predictions of the call.
            labels (Tensor): the loss's labels, (N,) or (B, ...): rows labelled outside
                [0, C) (mmdet's background C, ``ignore_index``) are not counted.
        """
        if ignore_index is not None:
            labels = labels.masked_fill(labels == ignore_index, -1)
        hits = None
        if self.needs_hits:
            with torch.no_grad():
                channels = pred.shape[1]
                if use_sigmoid:
                    index = labels.clamp(0, channels - 1).unsqueeze(1).long()
                    hits = pred.detach().gather(1, index).squeeze(1) > 0
                else:
                    hits = pred.detach().argmax(dim=1) == labels
        self.observe(labels, hits)

    def end_step(self) -> None:
        """Fold the open step into the averages (all-reduced under DDP), if it had calls.

        Every rank calls it at the same points (ranks run the same calls), so
        the collective never waits on a rank that skipped it.
        """
        self._by_hook = False
        if int(self._calls):
            self._fold()

    def _fold(self) -> None:
        pending = self._pending
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(pending)
        m = self.momentum
        seen = self.counts > 0
        self.counts.mul_(m).add_(pending[0], alpha=1 - m)
        # a class absent for ~70k steps (momentum 0.99) would underflow to 0 and count
        # as never seen (weight 1): a seen class stays seen, at float64's least normal
        self.counts.copy_(torch.where(seen, self.counts.clamp(min=_TINY), self.counts))
        self.hits.mul_(m).add_(pending[1], alpha=1 - m)
        self.steps.add_(1)
        pending.zero_()
        self._calls.zero_()
        self._weights = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Refuse statistics no training could have written (NaN, inf, negative
        counts, hits above counts, negative steps), naming the buffer."""
        counts = state_dict.get(prefix + 'counts')
        for name in ('counts', 'hits', 'steps'):
            value = state_dict.get(prefix + name)
            if value is None or not isinstance(value, Tensor):
                continue
            bad = not bool(torch.isfinite(value).all()) if value.is_floating_point() else False
            bad = bad or value.is_complex() or bool((value < 0).any())
            if not bad and name == 'hits' and isinstance(counts, Tensor) and \
                    counts.shape == value.shape:
                bad = bool((value > counts * (1 + 1e-9) + 1e-12).any())
            if bad:
                shown = value.flatten()[:8].tolist()
                raise ValueError(f'checkpoint refused: {prefix}{name} holds {shown}, not '
                                 'adaptive statistics (finite, >= 0, hits <= counts): '
                                 'the file is corrupt or was not written by training')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._weights = None

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, basis={self.basis!r}, power={self.power}, '
                f'momentum={self.momentum}, max_weight={self.max_weight}, '
                f'apply_to={self.apply_to!r}, eps={self.eps}, '
                f'effective_beta={self.effective_beta}, '
                f'normalise={self.normalise!r}, gamma_scale={self.gamma_scale}')


def build_adaptive(class_weight, adaptive_weight, num_classes) -> Optional[AdaptiveClassWeight]:
    """The AdaptiveClassWeight of ``DualFocalLoss(class_weight='adaptive', ...)``,
    else None (``adaptive_weight`` is then refused)."""
    if not (isinstance(class_weight, str) and class_weight == 'adaptive'):
        if adaptive_weight is not None:
            raise ValueError("adaptive_weight is only used with class_weight='adaptive', "
                             f'got class_weight={class_weight!r}')
        return None
    if num_classes is None:
        raise ValueError("class_weight='adaptive' needs num_classes (the number of "
                         'output channels) to hold its per-class statistics')
    if adaptive_weight is not None and not isinstance(adaptive_weight, dict):
        raise TypeError(f'adaptive_weight must be a dict, got {adaptive_weight!r}')
    settings = dict(adaptive_weight or {})
    unknown = sorted(set(settings) - set(ADAPTIVE_DEFAULTS))
    if 'beta' in unknown:
        raise ValueError("adaptive_weight's 'beta' (the 'effective' basis's) is now spelled "
                         f"'effective_beta' (got beta={settings['beta']!r})")
    if unknown:
        raise ValueError(f'adaptive_weight got unknown keys {unknown}; expected some '
                         f'of {sorted(ADAPTIVE_DEFAULTS)}')
    return AdaptiveClassWeight(num_classes, **{**ADAPTIVE_DEFAULTS, **settings})


def normalise_weights(raw: Tensor, freq: Tensor, apply_to: str, max_weight: float,
                      log_space: bool = False, normalise: str = 'mean') -> Tensor:
    """Scale ``raw`` so the average weight of what it multiplies is 1 (or, with
    ``normalise='head'``, so the least weight of a seen class is 1), then clip.

    A class not seen (``f_c = 0``) carries no information: it weighs 1, the
    average; with no class seen every weight is 1. Computed in log space, so a
    raw weight beyond the dtype's range (``inf``) still normalises.

    .. math::

        \\log w_c = \\mathrm{clip}(\\log r_c - \\log \\textstyle\\sum_k s_k r_k,\\ \\pm\\log M)

    Args:
        raw (Tensor): (C,) unnormalised weights (their logs with ``log_space``).
        freq (Tensor): (C,) class shares, summing to 1 (0: class not seen).
        apply_to (str): 'row' or 'positive' (``sum_c f_c w_c = 1``) or
            'element' (the mean over the seen classes is 1).
        normalise (str): 'mean' (as above) or 'head' (``min_c w_c = 1``).
        max_weight (float): clip to [1 / max_weight, max_weight].

    Returns:
        Tensor: (C,) weights, in the dtype of ``raw``.
    """
    log_raw = raw if log_space else torch.log(raw)
    seen = freq > 0
    share = freq if apply_to != 'element' else seen.to(raw.dtype) / seen.sum().clamp(min=1)
    log_raw = torch.where(seen, log_raw, 0)
    if normalise == 'head':
        log_average = torch.where(seen, log_raw, math.inf).min()
    else:
        terms = torch.where(seen, torch.log(share.clamp(min=torch.finfo(share.dtype).tiny))
                            + log_raw, -math.inf)
        log_average = torch.logsumexp(terms, 0)
    log_weights = torch.where(seen, log_raw - log_average, 0)
    limit = math.log(max_weight)
    return torch.where(seen, log_weights.clamp(-limit, limit), 0).exp()


def frequency_weights(counts: Tensor, power: float = ADAPTIVE_DEFAULTS['power'],
                      eps: float = ADAPTIVE_DEFAULTS['eps'],
                      max_weight: float = ADAPTIVE_DEFAULTS['max_weight'],
                      apply_to: str = 'element') -> Tensor:
    """Static weights from class counts, by the adaptive weights' formula.

    .. math:: w_c \\propto (f_c + \\epsilon)^{-\\mathrm{power}},\\ f_c = n_c / \\sum_k n_k

    Args:
        counts (Tensor): (C,) number of targets of each class.
        apply_to (str): where the weights will apply: 'element' (DFL's static
            ``class_weight``) or 'row' (mmseg CE's ``class_weight``).

    Returns:
        Tensor: (C,) float64 weights.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    freq = counts / counts.sum().clamp(min=1)
    return normalise_weights(-power * torch.log(freq + eps), freq, apply_to, max_weight,
                             log_space=True)
