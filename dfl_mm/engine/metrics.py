"""``DFLPerClassIoUMetric``: mmseg's IoU metric with every class's IoU in the results
(the demos' and the efficacy study's per-class and head / tail tables read them)."""
import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

__all__ = ['DFLPerClassIoUMetric']


@METRICS.register_module()
class DFLPerClassIoUMetric(IoUMetric):
    """mmseg's IoUMetric that also returns each class's IoU (``IoU.<class>``).

    The per-class values then reach ``scalars.json`` and the benchmark tools,
    not only the printed table.
    """

    # metric keys stay unprefixed ('mIoU', as mmseg's IoUMetric writes them); ''
    # says so and silences mmengine's "prefix is not set" warning
    default_prefix = ''

    def compute_metrics(self, results: list) -> dict:
        metrics = super().compute_metrics(results)
        results = tuple(zip(*results))
        intersect, union = sum(results[0]), sum(results[1])
        iou = (intersect / union).numpy() * 100
        for name, value in zip(self.dataset_meta['classes'], iou):
            metrics[f'IoU.{name}'] = round(float(np.nan_to_num(value)), 2)
        return metrics
