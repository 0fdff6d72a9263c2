"""The exponent (dfl_mm.models.gamma): what load_from restores (settings from the
config, a learned gamma within the config's bounds) and a saturated gamma's recovery."""
import math
import warnings

import pytest
import torch

from dfl_mm import DualFocalLoss

GAMMA_LOGIT_LIMIT = 12.0  # dfl_mm.models.loss.GAMMA_LOGIT_LIMIT (asserted below)


# ------------------------------------------------ load_from: settings from the config
def _ckpt(**settings):
    return {k: v.clone() for k, v in DualFocalLoss(**settings).state_dict().items()}


def test_load_from_keeps_the_configs_fixed_gamma():
    loss = DualFocalLoss(gamma=0.5)
    with pytest.warns(UserWarning, match='config fixes gamma=0.5'):
        loss.load_state_dict(_ckpt(gamma=2.0))
    assert float(loss.gamma) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # same settings (--resume): silent
        loss.load_state_dict(_ckpt(gamma=0.5))


def test_load_from_keeps_the_learned_gamma_as_a_value_in_the_configs_bounds():
    trained = DualFocalLoss(learnable_gamma='scalar', gamma=2.0, gamma_min=0.5, gamma_max=10.0)
    with torch.no_grad():
        trained.gamma_logit.fill_(math.log((3.0 - 0.5) / (10.0 - 3.0)))
    state = trained.state_dict()
    # other bounds, another initial value and pull: the value 3.0 stays 3.0
    loss = DualFocalLoss(learnable_gamma='scalar', gamma=1.5, gamma_min=1.0, gamma_max=5.0,
                         gamma_reg=0.1)
    loss.load_state_dict(state)
    assert float(loss.gamma) == pytest.approx(3.0, abs=1e-5)
    assert float(loss.exponent.gamma_init) == 1.5 and loss.exponent.reg == 0.1
    assert loss.exponent.gamma_range.tolist() == [1.0, 5.0]
    # outside the config's bounds: clipped into them, with one warning
    narrow = DualFocalLoss(learnable_gamma='scalar', gamma=1.0, gamma_min=0.5, gamma_max=2.0)
    with pytest.warns(UserWarning, match='outside the config'):
        narrow.load_state_dict(state)
    assert 1.999 < float(narrow.gamma) < 2.0
    # the same settings (--resume): bit for bit
    same = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    same.load_state_dict(state)
    assert torch.equal(same.gamma_logit, trained.gamma_logit)


def test_old_checkpoints_without_gamma_range_still_load_exactly():
    trained = DualFocalLoss(learnable_gamma='per_class', num_classes=3, gamma=2.0)
    with torch.no_grad():
        trained.gamma_logit.add_(torch.tensor([0.3, -0.2, 0.1]))
    # as saved before gamma_range and the exponent submodule existed
    old = {k.replace('exponent.', ''): v for k, v in trained.state_dict().items()
           if k != 'exponent.gamma_range'}
    fresh = DualFocalLoss(learnable_gamma='per_class', num_classes=3, gamma=2.0)
    result = fresh.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.gamma_logit, trained.gamma_logit)


def test_load_from_across_fixed_and_learnable_gamma_takes_the_config():
    learnable = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    result = learnable.load_state_dict(_ckpt(gamma=4.0), strict=True)
    assert not result.missing_keys and float(learnable.gamma) == pytest.approx(2.0)
    fixed = DualFocalLoss(gamma=1.0)
    with pytest.warns(UserWarning, match='learned gamma is not loaded'):
        result = fixed.load_state_dict(_ckpt(learnable_gamma='scalar', gamma=3.0), strict=True)
    assert not result.unexpected_keys and float(fixed.gamma) == 1.0


def test_load_from_through_mmengine_keeps_adaptive_statistics_and_config_settings(tmp_path):
    from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint
    source = DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=3,
                           gamma=2.0)
    source(torch.randn(1, 3, 2, 2), torch.tensor([[[0, 1], [1, 1]]]))
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint({'state_dict': source.state_dict()}, path)
    target = DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=3,
                           gamma=0.5, adaptive_weight=dict(power=1.0))
    with pytest.warns(UserWarning, match='config fixes gamma=0.5'):
        load_checkpoint(target, path, strict=True)
    assert float(target.gamma) == 0.5 and target.adaptive.power == 1.0
    assert torch.equal(target.adaptive.counts, source.adaptive.counts)


# ------------------------------------------------ saturated learnable gamma
def test_a_gamma_driven_to_its_bound_stays_recoverable():
    torch.manual_seed(5)
    loss = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1e12)
    scores, labels = 3 * torch.randn(200, 4), torch.randint(0, 5, (200, ))
    optimizer.zero_grad()
    loss(scores, labels).backward()
    optimizer.step()  # the logit is now ~1e11: far past the bound
    assert abs(float(loss.gamma_logit)) > 1e6
    loss(scores, labels).backward()  # the call counts it at the limit and projects it
    assert abs(float(loss.gamma_logit)) == GAMMA_LOGIT_LIMIT
    # only the pull now: its gradient is nonzero, and a step moves gamma off the bound
    bound = float(loss.gamma)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1e6)
    optimizer.zero_grad()
    loss.gamma_pull().backward()
    assert loss.gamma_logit.grad.abs() > 0
    optimizer.step()
    loss(scores, labels)
    assert abs(float(loss.gamma) - 2.0) < abs(bound - 2.0) - 0.5


def test_a_raising_call_undoes_its_projection_and_a_step_projects_once():
    """The projection happens at a step's first training call, before the logit
    enters the graph; a call that raises leaves the pushed logit as it was; inside
    a runner the later calls of the step (FPN levels) do not write the logit, so a
    graph that saved it (torch.compile) still finds it unchanged at backward."""
    loss = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    scores, labels = torch.randn(20, 4), torch.randint(0, 5, (20, ))
    with torch.no_grad():
        loss.gamma_logit.fill_(1e9)
    with pytest.raises(ValueError, match='out of range'):
        loss(scores, torch.full((20, ), 7))  # out of range: raises in the core
    assert float(loss.gamma_logit) == 1e9
    loss.exponent.begin_step()  # DFLStepHook.before_train_iter
    loss(scores, labels)
    assert float(loss.gamma_logit) == GAMMA_LOGIT_LIMIT
    with torch.no_grad():
        loss.gamma_logit.fill_(1e9)  # as if pushed again within the step
    version = loss.gamma_logit._version
    loss(scores, labels)
    assert float(loss.gamma_logit) == 1e9 and loss.gamma_logit._version == version
    loss.exponent.end_step()
    loss.exponent.begin_step()  # the next step's first call projects
    loss(scores, labels)
    assert float(loss.gamma_logit) == GAMMA_LOGIT_LIMIT


def test_a_learnable_gamma_must_start_inside_the_recoverable_range():
    with pytest.raises(ValueError, match='farther from its bounds'):
        DualFocalLoss(learnable_gamma='scalar', gamma=9.99999, gamma_min=0.5, gamma_max=10.0)


def test_the_logit_limit_is_the_modules():
    from dfl_mm.models import loss
    assert loss.GAMMA_LOGIT_LIMIT == GAMMA_LOGIT_LIMIT


def test_checkpoints_from_before_the_exponent_submodule_load_bit_for_bit():
    """State dicts whose keys were 'gamma_logit' / 'fixed_gamma' (no 'exponent.')."""
    trained = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    with torch.no_grad():
        trained.gamma_logit.add_(0.37)
    old = {'gamma_logit': trained.gamma_logit.detach().clone(),
           'gamma_init': torch.tensor(2.0)}
    fresh = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    result = fresh.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.gamma_logit, trained.gamma_logit)
    fixed = DualFocalLoss(gamma=3.0)
    assert not fixed.load_state_dict({'fixed_gamma': torch.tensor(3.0)}).unexpected_keys
