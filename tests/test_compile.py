"""torch.compile: the loss is one custom op in the graph, fullgraph, both modes."""
import copy

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


@pytest.mark.parametrize('avg_factor', [None, 7.5, torch.tensor(7.5)],
                         ids=['size', 'float', 'tensor'])
@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_fullgraph_compile_gives_eagers_loss_and_gradients_bit_for_bit(use_sigmoid, avg_factor):
    """One autograd path (the custom op) and one reduction: the same bits."""
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
                               avg_factor=avg_factor)

    eager, compiled = _eager_and_compiled(loss_fn, z.requires_grad_(), gamma.requires_grad_())
    for e, c in zip(eager, compiled):
        assert torch.equal(c, e), (c - e).abs().max()


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
    assert sum('dfl_mm.loss.default' in target for target in seen) == 1, seen


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
            assert torch.equal(c, e), (c - e).abs().max()


def _losses_of_a_short_run(config, compile_option):
    from mmengine.config import Config

    from dfl_mm.apis.launch import build_runner
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
    from testkit import ROOT, link_data
    link_data(shared_data, in_tmp)
    path = str(ROOT / 'configs' / 'demo' / config)
    eager, eager_hooks = _losses_of_a_short_run(path, False)
    compiled, hooks = _losses_of_a_short_run(path, True)
    assert 'EagerOptimizerStepHook' in hooks and 'EagerOptimizerStepHook' not in eager_hooks
    assert len(compiled) == len(eager) >= 2
    assert compiled == pytest.approx(eager, rel=2e-3)


# ------------------------------------------------ issue 28, items 1-5: real training calls
def _counting_backend():
    """aot_eager (autograd traced, no codegen) that records each compilation: one
    per (frame, compile) id; a restarted analysis of the same compile (dynamo turning
    a Python float into a tensor input) is the same graph, not a recompile."""
    from torch._dynamo.backends.registry import lookup_backend
    from torch._guards import CompileContext
    inner, compiles = lookup_backend('aot_eager'), {}

    def backend(gm, example_inputs):
        cid = CompileContext.current_compile_id()
        compiles[(cid.frame_id, cid.frame_compile_id)] = gm
        return inner(gm, example_inputs)

    class Graphs:
        def __len__(self):
            return len(compiles)
    graphs = Graphs()
    return backend, graphs


def _det_call(i):
    n = 40 + 9 * i  # the anchor count changes every step
    g = torch.Generator().manual_seed(i)
    return ((3 * torch.randn(n, 4, generator=g), torch.randint(0, 5, (n, ), generator=g),
             torch.rand(n, generator=g)), dict(avg_factor=float(3 + 2 * i)))


def _seg_call(i):
    h, w = 6 + i, 7 + 2 * (i % 4)  # sizes change (test-time sizes, crops); the first call
    # has no two equal sizes (else dynamo's duck sizing ties them until they differ)
    g = torch.Generator().manual_seed(i)
    labels = torch.randint(0, 4, (2, h, w), generator=g)
    labels[0, 0, :2] = 255
    return (3 * torch.randn(2, 4, h, w, generator=g), labels), dict(ignore_index=255)


MODES = [(s, g, a, 'arxiv2019') for s in (True, False) for g in (False, 'scalar', 'per_class')
         for a in (False, True)]
# the Neurocomputing form's graph is torch ops: its modes, with a learnable gamma
MODES += [(s, 'scalar', a, 'neurocomputing2021') for s in (True, False) for a in (False, True)]


@pytest.mark.parametrize('use_sigmoid, learnable, adaptive, form', MODES)
def test_every_mode_is_one_graph_across_changing_shapes_and_avg_factors(
        use_sigmoid, learnable, adaptive, form):
    """fullgraph=True, dynamic=True: 10 calls with other N / H, W and avg_factor each
    compile once; values, both gradients and the adaptive statistics equal eager's.
    Both forms (the Neurocomputing one is plain torch ops in the graph)."""
    settings = dict(use_sigmoid=use_sigmoid, learnable_gamma=learnable, num_classes=4,
                    avg_non_ignore=not use_sigmoid)
    loss_type = DualFocalLoss
    if form != 'arxiv2019':
        from dfl_mm.models.loss import NeurocomputingDualFocalLoss as loss_type
        settings.update(alpha=0.55, beta=3.0)
    if adaptive:
        settings.update(class_weight='adaptive', adaptive_weight=dict(momentum=0.5))
    torch.manual_seed(0)
    eager, traced = loss_type(**settings), loss_type(**settings)
    traced.load_state_dict(eager.state_dict())
    backend, graphs = _counting_backend()
    torch._dynamo.reset()
    compiled = torch.compile(traced, fullgraph=True, dynamic=True, backend=backend)
    call = _det_call if use_sigmoid else _seg_call
    for i in range(10):
        (pred, *rest), kwargs = call(i)
        outs, grads = [], []
        for fn in (eager, compiled):
            leaf = pred.clone().requires_grad_()
            out = fn(leaf, *rest, **kwargs)
            (out * 1.3).backward()
            outs.append(out.detach())
            grads.append(leaf.grad)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    assert len(graphs) == 1, f'{len(graphs)} graphs for 10 calls'
    for (name, a), (_, b) in zip(eager.named_parameters(), traced.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), (_, b) in zip(eager.named_buffers(), traced.named_buffers()):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=0, msg=name)
    if adaptive:
        assert int(traced.adaptive.steps) == 10
        assert not torch.equal(traced.adaptive.weights(), torch.ones(4))


def test_hook_steps_compile_too():
    """Inside DFLStepHook's steps the graph only counts; the fold happens eagerly."""
    settings = dict(class_weight='adaptive', num_classes=4)
    eager, traced = DualFocalLoss(**settings), DualFocalLoss(**settings)
    backend, graphs = _counting_backend()
    torch._dynamo.reset()
    compiled = torch.compile(traced, fullgraph=True, dynamic=True, backend=backend)
    for step in range(3):
        for module in (eager.adaptive, traced.adaptive):
            module.begin_step()
        for level in range(3):  # FPN levels
            (pred, labels, _), kwargs = _det_call(3 * step + level)
            torch.testing.assert_close(compiled(pred, labels, **kwargs),
                                       eager(pred, labels, **kwargs))
        for module in (eager.adaptive, traced.adaptive):
            module.end_step()
    assert len(graphs) == 1 and int(traced.adaptive.steps) == 3
    torch.testing.assert_close(traced.adaptive.counts, eager.adaptive.counts)


@pytest.mark.parametrize('layout', ['channels_last', 'transposed'])
def test_non_contiguous_logits_and_a_numpy_ignore_index_compile_with_inductor(layout):
    """Items 3 and 4: the fakes promise the ops' (contiguous) strides; a numpy
    integer ignore_index of the config is an int before it reaches the graph."""
    import numpy as np
    torch.manual_seed(3)
    if layout == 'channels_last':
        loss = DualFocalLoss(use_sigmoid=False, learnable_gamma='scalar',
                             class_weight='adaptive', num_classes=4,
                             ignore_index=np.int64(255))
        z = torch.randn(2, 4, 6, 5).to(memory_format=torch.channels_last)
        labels = torch.randint(0, 4, (2, 6, 5))
        labels[1, 2] = 255
        kwargs = {}
    else:
        loss = DualFocalLoss(class_weight='adaptive', num_classes=4)
        z = torch.randn(4, 30).t()  # (30, 4) scores, strides (1, 30)
        labels = torch.randint(0, 5, (30, ))
        kwargs = dict(avg_factor=6.0)
    results = []
    for mode in ('eager', 'compiled'):
        torch.manual_seed(0)
        module = copy.deepcopy(loss)
        fn = module if mode == 'eager' else torch.compile(module, fullgraph=True,
                                                          dynamic=True)
        leaf = z.detach().clone().requires_grad_()
        out = [fn(leaf, labels, **kwargs), fn(leaf, labels, reduction_override='none',
                                              **{k: v for k, v in kwargs.items()
                                                 if k != 'avg_factor'})]
        (out[0] + out[1].sum()).backward()
        results.append([o.detach() for o in out] + [leaf.grad])
    for e, c in zip(*results):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6)


def test_a_numpy_ignore_index_at_call_time_compiles():
    """Item 4 at call time: dynamo traces a numpy integer as a tensor (no
    numbers.Integral there); the check takes anything with ``__index__``."""
    import numpy as np
    torch.manual_seed(4)
    loss = DualFocalLoss(use_sigmoid=False)
    z, labels = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    labels[0, 0] = 255
    backend, graphs = _counting_backend()
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, dynamic=True, backend=backend)
    torch.testing.assert_close(compiled(z, labels, ignore_index=np.int64(255)),
                               loss(z, labels, ignore_index=255))
