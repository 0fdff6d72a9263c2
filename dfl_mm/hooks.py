"""``DFLGammaHook``: log the exponent of every DualFocalLoss in the model."""
import re
from typing import Dict, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .loss import DualFocalLoss

__all__ = ['DFLGammaHook', 'gamma_scalars']


def _short_name(path: str) -> str:
    # keys holding 'loss' would be summed into the total loss by parse_losses
    # and smoothed as losses by loggers: drop it from module paths
    return re.sub(r'loss_?', '', path).strip('.') or 'dfl'


def gamma_scalars(model: torch.nn.Module) -> Dict[str, float]:
    """Current gamma (mean, and min/max for a per-class gamma) and pull term.

    Keys are ``gamma`` for a model with one DualFocalLoss, else
    ``gamma.<module path without 'loss'>``; ``gamma_min``/``gamma_max`` for a
    per-class gamma and ``gamma_pull`` for the regulariser of a learnable one.
    """
    if is_model_wrapper(model):
        model = model.module
    losses = [(path, m) for path, m in model.named_modules()
              if isinstance(m, DualFocalLoss)]
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
    return scalars


@HOOKS.register_module()
class DFLGammaHook(Hook):
    """Put gamma into the message hub after every training iteration.

    The logger then shows it at every logging interval (averaged over the
    interval, like the losses) in the text log, ``scalars.json`` and any
    visualisation backend (TensorBoard, W&B), on every rank. Use with
    ``custom_hooks = [dict(type='DFLGammaHook')]``.
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL) reads the hub

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        for key, value in gamma_scalars(runner.model).items():
            runner.message_hub.update_scalar(f'train/{key}', value)
