"""The focusing exponent of ``DualFocalLoss``: fixed, or learned within bounds.

.. math::

    \\gamma = \\gamma_{min} + (\\gamma_{max} - \\gamma_{min})\\,\\sigma(\\mathrm{gamma\\_logit})

A learnable gamma is smooth and bounded (never stuck at a clamp) and pulled
toward its initial value by ``gamma_reg * mean((gamma - gamma_init)^2)``
(docs/loss.md, "Learnable gamma"). Checkpoints follow mmengine's meaning of
``load_from``: settings from the config, learned state from the file.
"""
import math
import warnings
from contextlib import contextmanager, nullcontext
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.checks import check_number
from ..core.functional import GAMMA_MAX

__all__ = ['FixedGamma', 'LearnableGamma', 'build_gamma', 'DEFAULT_GAMMA_REG',
           'GAMMA_LOGIT_LIMIT', 'LEARNABLE_MODES']

LEARNABLE_MODES = (False, 'scalar', 'per_class')
# Strength of the pull toward the initial value, from the sweep in
# tools/analysis/sweep_gamma_reg.py (docs/loss.md, "Learnable gamma").
DEFAULT_GAMMA_REG = 0.01
# |gamma_logit| is kept at most this: sigmoid'(12) = 6e-6, so a gamma driven
# to a bound still has a gradient that can bring it back (gamma then lies
# within 6e-6 * (gamma_max - gamma_min) of the bound).
GAMMA_LOGIT_LIMIT = 12.0
STATE = ('fixed_gamma', 'gamma_logit', 'gamma_init', 'gamma_range')


def _saved(state_dict, prefix):
    return {name: state_dict.pop(prefix + name) for name in STATE if prefix + name in state_dict}


class FixedGamma(nn.Module):
    """A fixed exponent (a buffer: saved, but the config's value always wins)."""

    mode = False  # DualFocalLoss's learnable_gamma

    def __init__(self, gamma: float):
        super().__init__()
        check_number('gamma', gamma, 0, GAMMA_MAX)
        self.register_buffer('fixed_gamma', torch.tensor(float(gamma)))

    def forward(self) -> Tensor:
        return self.fixed_gamma

    def pull(self, gamma: Optional[Tensor] = None) -> Tensor:
        return self.fixed_gamma.new_zeros(())

    def call(self):
        return nullcontext()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = _saved(state_dict, prefix)
        if saved:
            state_dict[prefix + 'fixed_gamma'] = self.fixed_gamma
            theirs = saved.get('fixed_gamma')
            if 'gamma_logit' in saved or (theirs is not None and not torch.equal(
                    theirs.to(self.fixed_gamma), self.fixed_gamma)):
                what = 'learned' if 'gamma_logit' in saved else 'fixed'
                warnings.warn(f"{prefix.rstrip('.')}: the checkpoint's {what} gamma is not "
                              f'loaded: the config fixes gamma={float(self.fixed_gamma)}')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f'gamma={float(self.fixed_gamma)}'


class LearnableGamma(nn.Module):
    """A learned exponent, one value or one per class, inside ``(low, high)``.

    Args:
        gamma (float): initial value and target of the pull, strictly inside.
        low, high (float): the bounds, 0 < low < high <= 20.
        reg (float): strength of the pull, >= 0.
        shape (tuple): () for one value, (C,) for one per class.
    """

    def __init__(self, gamma: float, low: float, high: float, reg: float,
                 shape: Tuple[int, ...] = ()):
        super().__init__()
        check_number('gamma', gamma, 0, GAMMA_MAX)
        check_number('gamma_min', low, 0, GAMMA_MAX)
        check_number('gamma_max', high, 0, GAMMA_MAX)
        if low >= high:
            raise ValueError(f'gamma_min must be < gamma_max, got gamma_min={low}, '
                             f'gamma_max={high}')
        if not low < gamma < high:
            raise ValueError(f'a learnable gamma must start strictly inside (gamma_min, '
                             f'gamma_max) = ({low}, {high}), got gamma={gamma}')
        check_number('gamma_reg', reg, 0, math.inf, low_open=False)
        self.low, self.high, self.reg = float(low), float(high), float(reg)
        self.mode = 'per_class' if shape else 'scalar'  # DualFocalLoss's learnable_gamma
        fraction = (gamma - low) / (high - low)
        logit = math.log(fraction / (1 - fraction))
        if abs(logit) > GAMMA_LOGIT_LIMIT:
            raise ValueError(f'a learnable gamma must start farther from its bounds '
                             f'({low}, {high}) (|gamma_logit| <= {GAMMA_LOGIT_LIMIT}), '
                             f'got gamma={gamma}')
        self.gamma_logit = nn.Parameter(torch.full(shape, logit))
        # None: no hook's step is open (every call projects); False / True: a
        # hook's step is open, not yet / already projected
        self._step_projected: Optional[bool] = None
        self.register_buffer('gamma_init', torch.full(shape, float(gamma)))
        # the bounds gamma_logit is expressed in, saved so that a checkpoint loaded
        # into other bounds keeps its learned gamma
        self.register_buffer('gamma_range', torch.tensor([self.low, self.high],
                                                         dtype=torch.float64))

    def forward(self) -> Tensor:
        """gamma in the autograd graph; the logit counts as clipped to the limit,
        with its gradient passed through (see :meth:`call`)."""
        logit = self.gamma_logit
        with torch.no_grad():
            excess = logit - logit.clamp(-GAMMA_LOGIT_LIMIT, GAMMA_LOGIT_LIMIT)
        return self.low + (self.high - self.low) * torch.sigmoid(logit - excess)

    def pull(self, gamma: Optional[Tensor] = None) -> Tensor:
        """``reg * mean((gamma - gamma_init)^2)``."""
        gamma = self() if gamma is None else gamma
        return self.reg * (gamma - self.gamma_init).pow(2).mean()

    def begin_step(self) -> None:
        """A hook opens a step: only its first call projects."""
        self._step_projected = False

    def end_step(self) -> None:
        self._step_projected = None

    abort_step = end_step

    @contextmanager
    def call(self):
        """One training call: put a logit that an optimizer step pushed past the
        limit back at it, undone if the call raises.

        At the first call of a hook's step (every call without one), before the
        logit enters the step's graph: a write between a forward and its
        backward would fail a compiled graph that saved the logit (RetinaNet
        calls its loss once per FPN level).
        """
        if self._step_projected:
            yield
            return
        before, projected = self.gamma_logit.detach().clone(), self._step_projected
        with torch.no_grad():
            self.gamma_logit.clamp_(-GAMMA_LOGIT_LIMIT, GAMMA_LOGIT_LIMIT)
        if projected is not None:
            self._step_projected = True
        try:
            yield
        except BaseException:
            with torch.no_grad():
                self.gamma_logit.copy_(before)
            self._step_projected = projected
            raise

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The learned gamma as a value in this module's bounds (clipped into them,
        with a warning, when outside); the initial value, the bounds and the pull
        are this module's. Same bounds (``--resume``): the logit bit for bit."""
        saved = _saved(state_dict, prefix)
        if saved:
            state_dict[prefix + 'gamma_init'] = self.gamma_init
            state_dict[prefix + 'gamma_range'] = self.gamma_range
            logit = saved.get('gamma_logit')
            state_dict[prefix + 'gamma_logit'] = (  # a fixed-gamma checkpoint: nothing learned
                self.gamma_logit.detach() if logit is None
                else self._reexpressed(logit, saved.get('gamma_range'), prefix))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _reexpressed(self, logit: Tensor, saved_range: Optional[Tensor], prefix: str):
        lo, hi = self.low, self.high
        if saved_range is not None and not torch.equal(
                saved_range, torch.tensor([lo, hi], dtype=saved_range.dtype)):
            old_lo, old_hi = saved_range.double().tolist()
            gamma = old_lo + (old_hi - old_lo) * torch.sigmoid(logit.double())
        elif bool((logit.abs() <= GAMMA_LOGIT_LIMIT).all()):
            return logit  # saved in these bounds (checkpoints without gamma_range too)
        else:
            gamma = lo + (hi - lo) * torch.sigmoid(logit.double())
        if bool(((gamma < lo) | (gamma > hi)).any()):
            warnings.warn(f"{prefix.rstrip('.')}: the checkpoint's gamma "
                          f'{gamma.flatten()[:8].tolist()} lies outside the config\'s bounds '
                          f'({lo}, {hi}): clipped into them')
        limit = torch.sigmoid(torch.tensor(GAMMA_LOGIT_LIMIT, dtype=torch.float64))
        fraction = ((gamma - lo) / (hi - lo)).clamp(1 - limit, limit)
        return torch.log(fraction / (1 - fraction)).to(logit.dtype)

    def extra_repr(self) -> str:
        return f'gamma_range=({self.low}, {self.high}), gamma_reg={self.reg}'


def build_gamma(gamma, learnable, num_classes, gamma_min, gamma_max, gamma_reg):
    """The exponent module of ``DualFocalLoss``'s settings."""
    if learnable is True:
        learnable = 'scalar'
    if learnable not in LEARNABLE_MODES:
        raise ValueError(f'learnable_gamma must be one of {LEARNABLE_MODES}, got {learnable!r}')
    if not learnable:
        return FixedGamma(gamma)
    if learnable == 'per_class' and num_classes is None:
        raise ValueError("learnable_gamma='per_class' needs num_classes (the number of "
                         'output channels)')
    shape = (num_classes, ) if learnable == 'per_class' else ()
    return LearnableGamma(gamma, gamma_min, gamma_max, gamma_reg, shape)
