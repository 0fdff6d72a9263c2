"""Check that the installed stack can run dfl_mm; exit 1 naming what fails.

    python tools/check_env.py
"""
import os
import sys
import tempfile
import traceback

FIX_INSTALL = 'run `bash tools/install.sh` (see docs/install.md)'


def check_versions():
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    import torch
    import torchvision
    print(f'torch {torch.__version__} (CUDA available: {torch.cuda.is_available()}, '
          f'built with CUDA {torch.version.cuda}), torchvision {torchvision.__version__}')
    print(f'mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, '
          f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}')


def check_mmcv_ops():
    try:
        import mmcv._ext  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f'mmcv was installed without its compiled ops or for another torch '
            f'(import mmcv._ext: {err}). mmcv-lite and wheels built for other '
            f'torch versions do not work: rebuild with `pip uninstall -y mmcv` '
            f'and then {FIX_INSTALL}') from None
    import torch
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f'mmcv.ops.nms gave {keep.tolist()}, expected [0, 2]')
    print('mmcv compiled ops: ok (nms)')


def _build(config, registry_module):
    import importlib

    from mmengine.config import Config
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'inherit.py')
            with open(path, 'w') as f:
                f.write(f'_base_ = {config!r}\n')
            cfg = Config.fromfile(path)
    except Exception as err:
        raise RuntimeError(
            f'cannot read {config}: {err}. mmengine resolves mmdet::/mmseg:: '
            'configs through pkg_resources: keep setuptools < 81') from None
    registry = importlib.import_module(registry_module)
    registry.MODELS.build(cfg.model)


def check_models():
    from mmdet.utils import register_all_modules as register_mmdet
    from mmseg.utils import register_all_modules as register_mmseg

    import dfl_mm  # noqa: F401
    register_mmdet(init_default_scope=False)
    register_mmseg(init_default_scope=False)
    _build('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', 'mmdet.registry')
    print('mmdet RetinaNet-R18: builds')
    _build('mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py',
           'mmseg.registry')
    print('mmseg DeepLabV3-R18: builds')


def check_checkpoint_round_trip():
    import torch
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

    import dfl_mm
    hub = MessageHub.get_instance('check_env')
    hub.update_scalar('train/loss', 1.0)
    loss = dfl_mm.DualFocalLoss(learnable_gamma='scalar', gamma=3.0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), loss)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'ckpt.pth')
        save_checkpoint({'state_dict': model.state_dict(),
                         'message_hub': hub.state_dict()}, path)
        fresh = torch.nn.Sequential(torch.nn.Linear(2, 2),
                                    dfl_mm.DualFocalLoss(learnable_gamma='scalar'))
        try:
            with dfl_mm.mmengine_checkpoint_loading():  # as the runner's loads
                checkpoint = load_checkpoint(fresh, path, map_location='cpu')
        except Exception as err:
            raise RuntimeError(
                f'an mmengine checkpoint does not load on torch {torch.__version__}: '
                f'{str(err).splitlines()[0]}. dfl_mm.mmengine_checkpoint_loading '
                'allow-lists its types (dfl_mm/engine/checkpoint.py); is dfl_mm the installed '
                'version?') from None
        MessageHub.get_instance('check_env_loaded').load_state_dict(
            checkpoint['message_hub'])
    gamma = float(fresh[1].gamma.detach())
    if abs(gamma - 3.0) > 1e-5:
        raise RuntimeError(f"gamma not restored from the checkpoint: {gamma}")
    print(f'mmengine checkpoint save/load on torch {torch.__version__}: ok')


CHECKS = [('versions', check_versions), ('mmcv ops', check_mmcv_ops),
          ('mmdet/mmseg models', check_models),
          ('checkpoint round trip', check_checkpoint_round_trip)]


def main() -> int:
    for name, check in CHECKS:
        try:
            check()
        except ImportError as err:
            print(f'FAILED [{name}]: {err}. {FIX_INSTALL}', file=sys.stderr)
            return 1
        except Exception as err:  # report every failure with its piece
            if os.environ.get('DFL_MM_DEBUG'):
                traceback.print_exc()
            print(f'FAILED [{name}]: {err}', file=sys.stderr)
            return 1
    print('environment OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
