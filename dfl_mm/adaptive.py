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
they multiply is 1 (per row: ``sum_c f_c w_c = 1``; per element: their mean is
1) and clipped to ``[1 / max_weight, max_weight]``. A class with no
information (never counted, ``f_c = 0``) weighs 1, the average; with nothing
counted at all (no step yet, or only steps whose rows were all ignored or
background) every weight is 1, so the loss keeps the unweighted scale.

What one update is: the weights used in a training step come from the steps
before it, never from the batch at hand. Inside an mmengine runner the counts
of every call of one iteration (a RetinaNet head calls its loss once per FPN
level) are summed and folded into the averages once, at the end of the
iteration (``DFLGammaHook``; without the hook, at the first call of the next
iteration), so the statistics and the weights do not depend on how many calls
make a step, and every FPN level of a step uses the same weights. Outside a
runner's training loop every training call is one step. Under DDP the counts
of a step are all-reduced at that fold (one collective of ``2 * C`` numbers per
step), so every rank holds identical weights. Nothing is updated in
``eval()`` mode.

All state is in persistent buffers (checkpointed, restored exactly by
``--resume``, never seen by the optimizer). The open step's counts are a
plain tensor, not a buffer: DDP's ``broadcast_buffers`` would otherwise
overwrite every rank's counts with rank 0's before the fold. A call that
raises changes nothing (``DualFocalLoss`` counts a call only once its loss
has been computed, and :meth:`AdaptiveClassWeight.call` undoes a fold).
"""
import math
from contextlib import contextmanager
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ['AdaptiveClassWeight', 'ADAPTIVE_DEFAULTS', 'build_adaptive', 'frequency_weights',
           'normalise_weights']

BASES = ('frequency', 'recall', 'effective')
APPLY_TO = ('row', 'element')
# Defaults from the sweep in tools/benchmarks/benchmark_efficacy.py (docs/loss.md, "Adaptive
# class weights").
ADAPTIVE_DEFAULTS = dict(basis='frequency', power=0.5, momentum=0.99,
                         max_weight=10.0, apply_to='row', eps=1e-4, beta=0.9999)


def runner_iter() -> Optional[int]:
    """The iteration of a running mmengine training loop, or None outside one."""
    try:
        from mmengine.logging import MessageHub
    except ImportError:  # the core works without mmengine
        return None
    if not MessageHub._instance_dict:
        return None
    hub = MessageHub.get_current_instance()
    # RuntimeInfoHook sets 'loop_stage' for the training loop and pops it
    # after: a finished runner's 'iter' must not freeze a later plain loop
    return hub.get_info('iter') if hub.get_info('loop_stage') == 'train' else None


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
            mmseg's CE ``class_weight``) or 'element' (the class-c element of
            every row, as DFL's static ``class_weight``).
        eps (float): added to the frequency (or to 1 - recall), > 0.
        beta (float): the 'effective' basis's beta, in [0, 1).

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
                 eps: float = 1e-4, beta: float = 0.9999):
        super().__init__()
        if basis not in BASES:
            raise ValueError(f'adaptive_weight basis must be one of {BASES}, got {basis!r}')
        if apply_to not in APPLY_TO:
            raise ValueError(f'adaptive_weight apply_to must be one of {APPLY_TO}, '
                             f'got {apply_to!r}')
        _check('power', power, lambda v: 0 <= v < math.inf, 'a number >= 0')
        _check('momentum', momentum, lambda v: 0 <= v < 1, 'a number in [0, 1)')
        _check('max_weight', max_weight, lambda v: 1 <= v < math.inf, 'a number >= 1')
        _check('eps', eps, lambda v: 0 < v < math.inf, 'a number > 0')
        _check('beta', beta, lambda v: 0 <= v < 1, 'a number in [0, 1)')
        self.num_classes = num_classes
        self.basis, self.apply_to = basis, apply_to
        self.power, self.momentum = float(power), float(momentum)
        self.max_weight, self.eps, self.beta = float(max_weight), float(eps), float(beta)
        zeros = torch.zeros(num_classes, dtype=torch.float64)
        self.register_buffer('counts', zeros.clone())
        self.register_buffer('hits', zeros.clone())
        self.register_buffer('steps', torch.zeros((), dtype=torch.int64))
        # counts of the step in progress, folded at its end (DFLGammaHook), so
        # checkpoints hold folded statistics only; not a buffer (see above)
        self._pending: Optional[Tensor] = None
        self._open = False  # whether pending holds an unfolded step
        self._open_iter = None  # the runner iteration it belongs to
        self._weights = None  # cache: the weights change only when a step folds

    @property
    def needs_hits(self) -> bool:
        return self.basis == 'recall'

    def frequency(self) -> Tensor:
        """(C,) running share of each class among the targets (0 before any step)."""
        total = self.counts.sum()
        return self.counts / total if total > 0 else torch.zeros_like(self.counts)

    def recall(self) -> Tensor:
        """(C,) running share of each class's targets predicted right."""
        return torch.where(self.counts > 0, self.hits / self.counts.clamp(min=1e-30), 0.0)

    def weights(self) -> Tensor:
        """(C,) float32 weights from the folded statistics (ones before any).

        .. math:: w = \\mathrm{clip}(r / \\langle r \\rangle, 1/M, M)
        """
        if self._weights is None or self._weights.device != self.counts.device:
            self._weights = self._compute_weights()
        return self._weights

    def _compute_weights(self) -> Tensor:
        if int(self.steps) == 0 or self.power == 0 or not bool(self.counts.any()):
            return torch.ones(self.num_classes, device=self.counts.device)
        freq = self.frequency()
        if self.basis == 'frequency':
            raw = (freq + self.eps).pow(-self.power)
        elif self.basis == 'recall':
            raw = (1 - self.recall() + self.eps).pow(self.power)
        else:  # (1 - beta) / (1 - beta^N); an unseen class (N = 0) weighs 1 below
            window = (self.counts / (1 - self.momentum)).clamp(min=1)
            raw = ((1 - self.beta) / -torch.expm1(window * math.log(self.beta))).pow(self.power)
        return normalise_weights(raw, freq, self.apply_to, self.max_weight).float()

    @torch.compiler.disable  # stateful, data-dependent: eager in a compiled model
    def weights_for(self, pred: Tensor, target: Tensor):
        """A loss call's (C,) weights, on ``pred``'s device, and where they apply.

        The weights come from the steps before this call, never from its batch.
        """
        if target.is_floating_point():
            raise TypeError("class_weight='adaptive' needs integer labels, got a float target")
        if pred.shape[1] != self.num_classes:
            raise ValueError(f'pred has {pred.shape[1]} channels, but the adaptive weights '
                             f'were built for num_classes={self.num_classes}')
        return self.weights().to(pred.device), self.apply_to

    @property
    def pending(self) -> Tensor:
        """(2, C) float64: the open step's raw counts and hits (zeros if none)."""
        if self._pending is None or self._pending.device != self.counts.device:
            self._pending = torch.zeros(2, self.num_classes, dtype=torch.float64,
                                        device=self.counts.device)
        return self._pending

    @contextmanager
    def call(self):
        """One training call: fold the open step first if the call belongs to a
        later runner iteration; if the call raises, undo that fold."""
        if not (self._open and runner_iter() != self._open_iter):
            yield
            return
        state = (self.counts, self.hits, self.steps, self.pending)
        saved = [t.clone() for t in state]
        self.end_step()
        try:
            yield
        except BaseException:
            for buffer, value in zip(state, saved):
                buffer.copy_(value)
            self._open, self._weights = True, None
            raise

    def observe(self, labels: Tensor, hits: Optional[Tensor] = None) -> None:
        """Add one call's targets to the current step.

        Args:
            labels (Tensor): class ids in [0, C) of the counted rows, any shape.
            hits (Tensor, optional): bool, like ``labels``: predicted right.
        """
        with torch.no_grad():
            labels = labels.reshape(-1)
            pending = self.pending
            pending[0] += torch.bincount(labels, minlength=self.num_classes).to(
                self.pending.dtype)
            if hits is not None:
                pending[1] += torch.bincount(
                    labels[hits.reshape(-1)], minlength=self.num_classes).to(pending.dtype)
        self._open, self._open_iter = True, runner_iter()
        if self._open_iter is None:  # outside a runner: every call is a step
            self.end_step()

    @torch.compiler.disable  # stateful, data-dependent: eager in a compiled model
    def count(self, pred: Tensor, labels: Tensor, ignore_index, use_sigmoid: bool) -> None:
        """Add a loss call's labelled rows (and, for 'recall', their hits) to the step.

        Args:
            pred (Tensor): (N, C) or (B, C, ...) predictions of the call.
            labels (Tensor): the loss's labels, (N,) or (B, ...): rows labelled outside
                [0, C) (mmdet's background C, ``ignore_index``) are not counted.
        """
        channels = pred.shape[1]
        counted = (labels >= 0) & (labels < channels)
        if ignore_index is not None:
            counted &= labels != ignore_index
        hits = None
        if self.needs_hits:
            with torch.no_grad():
                if use_sigmoid:
                    index = labels.clamp(0, channels - 1).unsqueeze(1)
                    hits = pred.detach().gather(1, index).squeeze(1) > 0
                else:
                    hits = pred.detach().argmax(dim=1) == labels
            hits = hits[counted]
        self.observe(labels[counted], hits)

    @torch.compiler.disable  # stateful, data-dependent: eager in a compiled model
    def end_step(self) -> None:
        """Fold the open step's counts into the averages (all-reduced under DDP).

        Every rank calls it at the same points (ranks run the same calls), so
        the collective never waits on a rank that skipped it.
        """
        if not self._open:
            return
        self._open = False
        pending = self.pending
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(pending)
        m = self.momentum
        self.counts.mul_(m).add_(pending[0], alpha=1 - m)
        self.hits.mul_(m).add_(pending[1], alpha=1 - m)
        self.steps += 1
        pending.zero_()
        self._weights = None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._weights = None

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, basis={self.basis!r}, power={self.power}, '
                f'momentum={self.momentum}, max_weight={self.max_weight}, '
                f'apply_to={self.apply_to!r}, eps={self.eps}, beta={self.beta}')


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
    if unknown:
        raise ValueError(f'adaptive_weight got unknown keys {unknown}; expected some '
                         f'of {sorted(ADAPTIVE_DEFAULTS)}')
    return AdaptiveClassWeight(num_classes, **{**ADAPTIVE_DEFAULTS, **settings})


def normalise_weights(raw: Tensor, freq: Tensor, apply_to: str, max_weight: float) -> Tensor:
    """Scale ``raw`` so the average weight of what it multiplies is 1, then clip.

    A class not seen (``f_c = 0``) carries no information: it weighs 1, the
    average; with no class seen every weight is 1.

    Args:
        raw (Tensor): (C,) unnormalised weights.
        freq (Tensor): (C,) class shares, summing to 1 (0: class not seen).
        apply_to (str): 'row' (``sum_c f_c w_c = 1``) or 'element' (the mean
            over the seen classes is 1).
        max_weight (float): clip to [1 / max_weight, max_weight].

    Returns:
        Tensor: (C,) weights, in the dtype of ``raw``.
    """
    seen = freq > 0
    share = freq if apply_to == 'row' else seen.to(raw.dtype) / seen.sum().clamp(min=1)
    average = (share * raw).sum()
    weights = torch.where(seen, raw / torch.where(average > 0, average, 1), 1)
    return weights.clamp(1 / max_weight, max_weight)


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
    return normalise_weights((freq + eps).pow(-power), freq, apply_to, max_weight)


def _check(name, value, ok, expected):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'adaptive_weight {name} must be {expected}, got '
                        f'{type(value).__name__} {value!r}')
    if math.isnan(value) or not ok(value):
        raise ValueError(f'adaptive_weight {name} must be {expected}, got {value}')
