"""torch.compile: the loss is one custom op in the graph, fullgraph, both modes."""
import pytest
import torch

from dfl_mm import DualFocalLoss, dual_focal_loss

pytestmark = pytest.mark.slow  # compiles with inductor


def _eager_and_compiled(fn, *args):
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    results = []
    for run in (fn, compiled):
        leaves = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
        out = run(*leaves)
        (out * 1.7).backward()
        results.append([out.detach()] + [leaf.grad for leaf in leaves if leaf.requires_grad])
    return results


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_fullgraph_compile_matches_eager(use_sigmoid):
    torch.manual_seed(0)
    if use_sigmoid:
        z, labels = 3 * torch.randn(64, 5), torch.randint(0, 6, (64, ))
        weight = torch.rand(64)
    else:
        z, labels = 3 * torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
        labels[0, 0] = 255
        weight = torch.rand(2, 6, 7)
    gamma = torch.tensor(1.6)

    def loss_fn(logits, g):
        return dual_focal_loss(logits, labels, g, use_sigmoid=use_sigmoid, weight=weight,
                               ignore_index=255 if not use_sigmoid else None,
                               avg_factor=None)

    eager, compiled = _eager_and_compiled(loss_fn, z.requires_grad_(), gamma.requires_grad_())
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_the_module_with_a_learnable_gamma_compiles_fullgraph(use_sigmoid):
    torch.manual_seed(1)
    loss = DualFocalLoss(use_sigmoid=use_sigmoid, learnable_gamma='scalar',
                         avg_non_ignore=not use_sigmoid)
    if use_sigmoid:
        z, labels = torch.randn(40, 4), torch.randint(0, 5, (40, ))
        kwargs = dict(avg_factor=7.0)
    else:
        z, labels = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
        kwargs = dict(ignore_index=255)
    eager = loss(z, labels, **kwargs)
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)(z, labels, **kwargs)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-7)
    compiled.backward()
    assert loss.gamma_logit.grad is not None and torch.isfinite(loss.gamma_logit.grad)


def test_the_compiled_graph_holds_the_loss_as_one_custom_op():
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes if node.op == 'call_function')
        return gm.forward

    torch._dynamo.reset()
    z, labels = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randint(0, 3, (2, 4, 4))
    fn = torch.compile(lambda x: dual_focal_loss(x, labels, 2.0, use_sigmoid=False),
                       backend=record, fullgraph=True)
    fn(z).backward()
    assert sum('dfl_mm.loss' in target for target in seen) == 1, seen


@pytest.mark.parametrize('backend_name', ['reference', 'cpu'])
def test_compiled_softmax_on_every_cpu_backend_and_a_per_class_gamma(switch, backend_name):
    """The fused softmax path of the compiled op on a backend without a fused pass
    (the reference), and with a per-class gamma (which the C kernel leaves to it)."""
    switch(backend_name)
    torch.manual_seed(2)
    z, labels = 3 * torch.randn(2, 4, 5, 6), torch.randint(0, 4, (2, 5, 6))
    for gamma in (torch.tensor(1.8), torch.tensor([1.0, 2.0, 3.0, 1.5])):
        def loss_fn(logits, g):
            return dual_focal_loss(logits, labels, g, use_sigmoid=False)

        eager, compiled = _eager_and_compiled(loss_fn, z.requires_grad_(),
                                              gamma.requires_grad_())
        for e, c in zip(eager, compiled):
            torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-7)


def _losses_of_a_short_run(config, compile_option):
    from mmengine.config import Config
    from dfl_mm.launch import build_runner
    cfg = Config.fromfile(config)
    cfg.work_dir = f'work_dirs/compile_{compile_option}'
    cfg.compile = compile_option
    if 'max_iters' in cfg.train_cfg:
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 3
        cfg.param_scheduler[0].end = 3
        cfg.model.decode_head.dropout_ratio = cfg.model.auxiliary_head.dropout_ratio = 0.0
        cfg.train_dataloader.dataset.indices = 24  # eager and inductor draw other randoms
    else:
        cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = 1
        cfg.train_dataloader.dataset.indices = 16
    cfg.val_dataloader.dataset.indices = 2
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    runner = build_runner(cfg)
    runner.train()
    hooks = [type(h).__name__ for h in runner.hooks]
    return runner.message_hub.get_scalar('train/loss').data[0].tolist(), hooks


@pytest.mark.parametrize('config', ['retinanet_r18_dfl_demo.py', 'deeplabv3_r18_dfl_demo.py'])
def test_the_demo_configs_train_with_mmengines_compile_option(config, in_tmp, shared_data):
    """compile=True (mmengine compiles train_step with inductor): the demo trains and
    its losses are the eager run's. The runner built by tools/train.py runs the
    optimizer step eagerly (EagerOptimizerStepHook: dynamo fails on AdamW there);
    the adaptive statistics and the learnable gamma (5 FPN calls a step, one
    backward) run through the compiled model."""
    from conftest import ROOT, link_data
    link_data(shared_data, in_tmp)
    path = str(ROOT / 'configs' / 'demo' / config)
    eager, eager_hooks = _losses_of_a_short_run(path, False)
    compiled, hooks = _losses_of_a_short_run(path, True)
    assert 'EagerOptimizerStepHook' in hooks and 'EagerOptimizerStepHook' not in eager_hooks
    assert len(compiled) == len(eager) >= 2
    assert compiled == pytest.approx(eager, rel=2e-3)
