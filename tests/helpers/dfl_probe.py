"""Test-only hooks, imported by configs that tests write (custom_imports)."""
import json
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from dfl_mm import DualFocalLoss


def _losses(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return model, [m for m in model.modules() if isinstance(m, DualFocalLoss)]


@HOOKS.register_module()
class DumpStateHook(Hook):
    """Write each rank's gamma and a parameter checksum after training."""

    priority = 'LOWEST'

    def after_train(self, runner):
        model, losses = _losses(runner)
        rank = dist.get_rank() if dist.is_initialized() else 0
        state = dict(
            rank=rank,
            world_size=dist.get_world_size() if dist.is_initialized() else 1,
            gammas=[loss.gamma.flatten().tolist() for loss in losses],
            class_weights=[loss.adaptive.weights().tolist() for loss in losses
                           if loss.adaptive is not None],
            checksum=float(sum(p.detach().double().sum() for p in model.parameters())),
            iters=runner.iter)
        with open(osp.join(runner.work_dir, f'state_rank{rank}.json'), 'w') as f:
            json.dump(state, f)


@HOOKS.register_module()
class ResumeProbeHook(Hook):
    """Record gamma and the optimizer state of gamma right after resuming."""

    priority = 'VERY_HIGH'
    records = []

    def before_train(self, runner):
        _, losses = _losses(runner)
        optimizer = runner.optim_wrapper.optimizer
        adaptive = {f'{i}.{name}': buffer.clone() for i, loss in enumerate(losses)
                    if loss.adaptive is not None
                    for name, buffer in loss.adaptive.state_dict().items()}
        param = losses[0].gamma_logit
        state = {k: v.clone() if torch.is_tensor(v) else v
                 for k, v in optimizer.state.get(param, {}).items()}
        ResumeProbeHook.records.append(dict(
            gamma_logit=param.detach().clone(), optimizer_state=state, adaptive=adaptive,
            iter=runner.iter, epoch=runner.epoch))
