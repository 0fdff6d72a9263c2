"""``DFLStepHook`` (registered as ``DFLGammaHook`` too): each training iteration is
one step of every DualFocalLoss's state, reported after it; ``EagerOptimizerStepHook``
for ``compile=True``."""
import re
from typing import Dict, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..core.checks import check_positive_int
from ..models.adaptive import AdaptiveClassWeight
from ..models.gamma import LearnableGamma
from ..models.loss import DualFocalLoss
from .checkpoint import scope_checkpoint_loads

__all__ = ['DFLStepHook', 'EagerOptimizerStepHook', 'gamma_scalars', 'has_step_hook',
           'STEP_HOOK_NAMES']


def _short_name(path: str) -> str:
    # keys holding 'loss' would be summed into the total loss by parse_losses
    # and smoothed as losses by loggers: drop it from module paths
    return re.sub(r'loss_?', '', path).strip('.') or 'dfl'


# up to this many classes every adaptive weight is logged, else min / max
LOG_EACH_WEIGHT = 10
PER_CLASS = re.compile(r'class_weight_\d+')


def _losses(model: torch.nn.Module):
    if is_model_wrapper(model):
        model = model.module
    return [(path, m) for path, m in model.named_modules()
            if isinstance(m, DualFocalLoss)]


def _stepped(model: torch.nn.Module):
    """The parts of the model's losses that keep per-step state."""
    if is_model_wrapper(model):
        model = model.module
    return [m for m in model.modules() if isinstance(m, (AdaptiveClassWeight, LearnableGamma))]


def gamma_scalars(model: torch.nn.Module) -> Dict[str, float]:
    """Current gamma (mean, and min/max for a per-class gamma), pull term and
    adaptive class weights.

    Keys are ``gamma`` for a model with one DualFocalLoss, else
    ``gamma.<module path without 'loss'>``; ``gamma_min``/``gamma_max`` for a
    per-class gamma and ``gamma_pull`` for the regulariser of a learnable one;
    with ``class_weight='adaptive'`` ``class_weight_min``/``class_weight_max``
    and, for up to ``LOG_EACH_WEIGHT`` classes, ``class_weight_<c>``.
    """
    losses = _losses(model)
    scalars = {}
    for path, loss in losses:
        suffix = '' if len(losses) == 1 else '.' + _short_name(path)
        with torch.no_grad():
            gamma = loss.gamma.float()
            scalars['gamma' + suffix] = gamma.mean().item()
            if gamma.numel() > 1:
                scalars['gamma_min' + suffix] = gamma.min().item()
                scalars['gamma_max' + suffix] = gamma.max().item()
            if loss.learnable_gamma:
                scalars['gamma_pull' + suffix] = loss.gamma_pull().item()
            if loss.adaptive is not None:
                weights = loss.adaptive.weights().tolist()
                scalars['class_weight_min' + suffix] = min(weights)
                scalars['class_weight_max' + suffix] = max(weights)
                if len(weights) <= LOG_EACH_WEIGHT:
                    for c, w in enumerate(weights):
                        scalars[f'class_weight_{c}{suffix}'] = w
    return scalars


# its registered names: DFLGammaHook is what configs before 2026-12-07 name
STEP_HOOK_NAMES = ('DFLStepHook', 'DFLGammaHook')


def has_step_hook(hooks) -> bool:
    """Whether ``custom_hooks`` (dicts or hook objects) hold a ``DFLStepHook``."""
    names = STEP_HOOK_NAMES + tuple(f'dfl_mm.{name}' for name in STEP_HOOK_NAMES)
    return any(isinstance(h, DFLStepHook) or (isinstance(h, dict) and (
        h.get('type') in names or h.get('type') is DFLStepHook)) for h in hooks or ())


@HOOKS.register_module(name=list(STEP_HOOK_NAMES))
class DFLStepHook(Hook):
    """Make each training iteration one step of the adaptive weights (and of the
    learnable gamma's projection) and put gamma (and the weights) into the
    message hub after it.

    The logger then shows it at every logging interval (averaged over the
    interval, like the losses) in the text log, ``scalars.json`` and any
    visualisation backend (TensorBoard, W&B), on every rank. The per-class
    adaptive weights go to the visualisation backends only (see
    ``per_class_interval``), so a log line carries the summary. Before the run it
    scopes the runner's checkpoint loads (``dfl_mm.engine.checkpoint``; the one
    place they are scoped: the tools add this hook). Use with
    ``custom_hooks = [dict(type='DFLStepHook')]``; ``'DFLGammaHook'``, its name
    before 2026-12-07, builds the same hook.
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL) reads the hub

    def __init__(self, per_class_interval: Optional[int] = None):
        """
        Args:
            per_class_interval (int, optional): write the per-class adaptive
                weights (``class_weight_<c>``) to the visualisation backends
                (``scalars.json``, TensorBoard, W&B) every this many
                iterations; they stay out of the text log, which keeps the
                summary (gamma, ``class_weight_min``/``max``). Default: the
                LoggerHook's interval.
        """
        check_positive_int('per_class_interval', per_class_interval, optional=True)
        self.per_class_interval = per_class_interval

    def before_run(self, runner) -> None:
        # load_or_resume runs after before_run: a runner built without the
        # project's tools still loads mmengine checkpoints on torch >= 2.6
        scope_checkpoint_loads(runner)

    def before_train(self, runner) -> None:
        """An iteration that raises leaves its open step behind: drop it, so a
        later use of the same loss (a plain loop, another runner) starts clean.
        mmengine calls no hook when an iteration raises, so the loop's ``run_iter``
        is wrapped; without it the crash test shows a later plain loop's calls
        counted into the dead step and never folded."""
        loop = runner.train_loop
        run_iter = getattr(loop, 'run_iter', None)
        if run_iter is None or getattr(run_iter, 'dfl_steps', False):
            return
        modules = _stepped(runner.model)

        def guarded(*args, **kwargs):
            try:
                return run_iter(*args, **kwargs)
            except BaseException:
                for module in modules:
                    module.abort_step()
                raise

        guarded.dfl_steps = True
        loop.run_iter = guarded

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        for module in _stepped(runner.model):
            module.begin_step()  # the iteration's calls are one step

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        for module in _stepped(runner.model):
            module.end_step()  # folded before checkpoints are saved
        per_class = {}
        for key, value in gamma_scalars(runner.model).items():
            if PER_CLASS.match(key):
                per_class[key] = value
            else:
                runner.message_hub.update_scalar(f'train/{key}', value)
        if per_class and self.every_n_train_iters(runner, self._per_class_interval(runner)):
            runner.visualizer.add_scalars(per_class, step=runner.iter + 1)

    def _per_class_interval(self, runner) -> int:
        if self.per_class_interval is None:
            loggers = [h for h in runner.hooks if type(h).__name__ == 'LoggerHook']
            self.per_class_interval = loggers[0].interval if loggers else 50
        return self.per_class_interval


@HOOKS.register_module()
class EagerOptimizerStepHook(Hook):
    """Run the optimizer step outside the compiled graph of ``compile=True``.

    mmengine compiles the whole ``train_step``, optimizer step included, and
    torch 2.14's dynamo fails to trace AdamW over mmengine's parameter groups
    (``InternalTorchDynamoError`` in ``_set_capturable``). The model's forward
    and backward stay compiled. ``tools/train.py`` adds this hook whenever the
    config sets ``compile``.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if hasattr(wrapper, 'values') else [wrapper]
        for each in wrappers:
            optimizer = each.optimizer
            optimizer.step = torch.compiler.disable(optimizer.step)
