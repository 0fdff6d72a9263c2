"""``dfl_mm.core``: the loss function, its checks and the mmdet / mmseg call
conventions; torch only (imports with mmengine, mmdet, mmseg and mmcv absent)."""
