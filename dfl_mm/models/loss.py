"""``DualFocalLoss``: the registered module for mmdet and mmseg configs."""
from contextlib import nullcontext
from typing import Optional, Sequence, Union

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from ..core import conventions
from ..core.checks import (
    check_call,
    check_form,
    check_gamma_scale,
    check_ignore_index,
    check_moved,
    check_settings,
    load_class_weight,
)
from ..core.conventions import assigned_labels, one_hot_as_target
from ..core.functional import GAMMA_MAX, compute, parse
from .adaptive import build_adaptive
from .gamma import DEFAULT_GAMMA_REG, GAMMA_LOGIT_LIMIT, STATE, build_gamma

__all__ = ['DualFocalLoss', 'NeurocomputingDualFocalLoss', 'DEFAULT_GAMMA_REG',
           'GAMMA_LOGIT_LIMIT']

@MODELS.register_module()
class DualFocalLoss(nn.Module):
    """Dual Focal Loss with an optionally learnable focusing exponent.

    .. math:: \\ell_{nc} = -\\ln\\bigl(1 - |y_{nc} - p_{nc}|^{\\gamma}\\bigr)

    One module serves both OpenMMLab call conventions, told apart by the rank
    of the prediction:

    * mmdet dense heads: ``loss(cls_score (N, C), labels (N,), label_weights,
      avg_factor=..., reduction_override=...)``; labels in [0, C] with
      C = background (sigmoid); 'none' gives the (N, C) element map; 'mean'
      divides by ``avg_factor`` (or by N * C), like mmdet's FocalLoss.
    * mmdet quality heads (GFL, TOOD, RTMDet, LD: QualityFocalLoss's place):
      ``loss(cls_score (N, C), (labels (N,), scores (N,)), weight (N,),
      avg_factor=...)``: the soft target ``y`` = the score at the label, as
      QualityFocalLoss: 'none' gives the per-row (N,) loss, 'mean' without
      ``avg_factor`` averages over rows; VFNet (VarifocalLoss's place) passes
      an (N, C) IoU-aware float target (elements, as VarifocalLoss).
    * mmseg decode heads: ``loss(seg_logits (B, C, H, W), seg_label (B, H, W),
      weight=None, ignore_index=255)``; 'none' gives the per-pixel (B, H, W)
      loss (summed over classes); 'mean' averages over pixels, or over the
      non-ignored ones with ``avg_non_ignore``. A binary head (C = 1, sigmoid)
      takes labels 0/1 with 1 = foreground.

    Args:
        use_sigmoid (bool): sigmoid per class (mmdet, multi-label) or softmax
            over classes (mmseg). Default: True.
        gamma (float): the (initial) focusing exponent, in (0, 20]. Default: 2.
        learnable_gamma (False | 'scalar' | 'per_class'): learn gamma by
            backpropagation, one value or one per class (needs
            ``num_classes``). Default: False (gamma is a fixed buffer).
        num_classes (int, optional): channels of the prediction; required for
            a per-class gamma, and checks ``class_weight`` early.
        gamma_min (float): lower bound of a learnable gamma. Default: 0.5.
        gamma_max (float): upper bound of a learnable gamma. Default: 10.
        gamma_reg (float): strength of the pull
            ``gamma_reg * mean((gamma - gamma_init) ** 2)`` added to the loss
            of a learnable gamma. Default: ``DEFAULT_GAMMA_REG``.
        alpha (float, optional): sigmoid mode only: weight of positive targets
            (negatives get ``1 - alpha``). Default: None (equal importance).
        class_weight (list | str, optional): per-class weights, a path to a
            .npy/.pkl/.json/.yaml file holding them, or 'adaptive': weights from running
            class statistics (``dfl_mm.models.adaptive``; needs ``num_classes``).
            Static weights multiply the class-c element of every row.
        adaptive_weight (dict, optional): settings of the adaptive weights,
            keys of ``ADAPTIVE_DEFAULTS`` (basis, power, momentum, max_weight,
            apply_to, eps, effective_beta, normalise, gamma_scale); missing keys take
            those defaults.
        reduction (str): 'none', 'mean' or 'sum'. Default: 'mean'.
        loss_weight (float): factor of the returned loss. Default: 1.
        avg_non_ignore (bool): mmseg: average over non-ignored pixels only.
        ignore_index (int | None): label to leave out, honoured whatever its
            value (a valid class id too: its rows are then left out). Default:
            None, nothing ignored: mmdet never passes one and with 255 or more
            classes (Objects365, LVIS) 255 is a real label; mmseg decode heads
            always pass their own (255 in its configs).
        loss_name (str): key of the loss in mmseg's loss dict; must start with
            ``loss_``. Default: 'loss_dfl'.
        activated (bool): ``pred`` holds probabilities, not logits (TOOD's
            heads; mmdet's ``activated``), sigmoid mode. Default: False.
        iou_weighted (bool): VarifocalLoss's meaning: with a float target a
            positive element (target q > 0) weighs q. Default: False.
        channels_last (bool): ``pred`` is (..., C) with the classes last
            (YOLOv3's (B, N, C) maps): every leading index is a row of mmdet's
            (N, C) convention; 'none' keeps ``pred``'s shape. Default: False.

    Example:
        >>> loss = DualFocalLoss(learnable_gamma='scalar')
        >>> cls_score = torch.randn(100, 80, requires_grad=True)
        >>> labels = torch.randint(0, 81, (100,))
        >>> loss(cls_score, labels, avg_factor=10.0).backward()
        >>> float(loss.gamma)  # gamma's gradient is in loss.gamma_logit.grad
        2.0
    """

    FORM = 'arxiv2019'  # the functional's form: the element above

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 learnable_gamma: Union[bool, str] = False,
                 num_classes: Optional[int] = None,
                 gamma_min: float = 0.5,
                 gamma_max: float = 10.0,
                 gamma_reg: float = DEFAULT_GAMMA_REG,
                 alpha: Optional[float] = None,
                 class_weight: Optional[Union[Sequence[float], str]] = None,
                 adaptive_weight: Optional[dict] = None,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 avg_non_ignore: bool = False,
                 ignore_index: Optional[int] = None,
                 loss_name: str = 'loss_dfl',
                 activated: bool = False,
                 iou_weighted: bool = False,
                 channels_last: bool = False,
                 **moved):
        super().__init__()
        check_moved(moved)
        check_settings(use_sigmoid=use_sigmoid, num_classes=num_classes, reduction=reduction,
                       alpha=alpha, loss_name=loss_name, loss_weight=loss_weight,
                       ignore_index=ignore_index, avg_non_ignore=avg_non_ignore,
                       activated=activated, iou_weighted=iou_weighted,
                       channels_last=channels_last)
        self.activated, self.iou_weighted = activated, iou_weighted
        self.channels_last = channels_last
        self.use_sigmoid, self.num_classes, self.alpha = use_sigmoid, num_classes, alpha
        self.reduction, self.loss_weight = reduction, loss_weight
        self.avg_non_ignore = avg_non_ignore
        self.ignore_index = check_ignore_index(ignore_index)  # a numpy integer as an int
        self._loss_name = loss_name
        # the exponent: FixedGamma or LearnableGamma (its parameter is
        # 'exponent.gamma_logit', which custom_keys={'gamma_logit': ...} matches)
        self.exponent = build_gamma(gamma, learnable_gamma, num_classes, gamma_min, gamma_max,
                                    gamma_reg)
        self.adaptive = build_adaptive(class_weight, adaptive_weight, num_classes)
        if self.adaptive is not None:
            check_gamma_scale(gamma_max if learnable_gamma else gamma,
                              self.adaptive.gamma_scale, GAMMA_MAX, self.FORM)
        weights = None if self.adaptive is not None else load_class_weight(
            class_weight, num_classes)
        self.register_buffer(
            'class_weight', None if weights is None else torch.tensor(weights),
            persistent=False)
        self.last_gamma_pull: Optional[Tensor] = None

    @property
    def loss_name(self) -> str:
        """Key of this loss in mmseg's loss dict."""
        return self._loss_name

    @property
    def gamma(self) -> Tensor:
        """The current exponent, detached: 0-d, or (C,) for a per-class gamma."""
        return self.current_gamma().detach()

    @property
    def learnable_gamma(self):
        """False, 'scalar' or 'per_class' (the exponent's)."""
        return self.exponent.mode

    @property
    def gamma_logit(self) -> nn.Parameter:
        """The parameter of a learnable gamma (AttributeError for a fixed one)."""
        if not self.learnable_gamma:
            raise AttributeError('a fixed gamma has no gamma_logit')
        return self.exponent.gamma_logit

    def current_gamma(self) -> Tensor:
        """The exponent, in the autograd graph for a learnable one."""
        return self.exponent()

    def gamma_pull(self, gamma: Optional[Tensor] = None) -> Tensor:
        """``gamma_reg * mean((gamma - gamma_init) ** 2)``, 0 for a fixed gamma."""
        return self.exponent.pull(gamma)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of 0.1.0 (before the exponent submodule) kept its state here
        for name in STATE:
            if prefix + name in state_dict:
                state_dict[f'{prefix}exponent.{name}'] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None, **kwargs) -> Tensor:
        """Loss of ``pred`` against ``target`` in mmdet's or mmseg's convention.

        A call that raises changes no state: the adaptive statistics count a
        call only once its loss has been computed (every check passed), and a
        projection of the learnable exponent (at a step's first call) is undone.

        Args:
            pred (Tensor): (N, C) anchor scores (mmdet) or (B, C, H, W) logits.
            target (Tensor | tuple): labels (N,) / (B, H, W), targets shaped
                like ``pred`` (floats, sigmoid mode, e.g. VFNet's IoU-aware
                map, or an integer one-hot map), or QualityFocalLoss's
                ``(labels (N,), scores (N,))``.
            weight (Tensor, optional): (N,), (N, 1), (N, C) (or flattened, as
                mmdet's FocalLoss takes it) or (B, H, W); non-negative.
            avg_factor (float | Tensor, optional): divisor of 'mean', >= 0.
            reduction_override (str, optional): 'none', 'mean' or 'sum'.
            ignore_index (int, optional): overrides the module's.

        Returns:
            Tensor: the scalar loss ('mean'/'sum', including the gamma pull),
            (N, C) for mmdet's 'none', (N,) with a ``(labels, scores)`` target
            or (B, H, W) for mmseg's; float32 for half-precision ``pred``.
        """
        if self.channels_last and isinstance(pred, Tensor) and pred.dim() > 2:
            out = self.forward(*conventions.channels_last_rows(pred, target, weight),
                               avg_factor, reduction_override, ignore_index, **kwargs)
            return out.view(pred.shape) if out.dim() else out
        # a call that raises changes no state: the projection (a step's first training
        # call) is undone, a call is counted once its loss is computed; only training
        # calls count (not eval, not OHEM's)
        projecting = self.training and not torch.compiler.is_compiling()
        counting = self.adaptive is not None and self.training and torch.is_grad_enabled()
        with self.exponent.call() if projecting else nullcontext():
            gamma = self.current_gamma()
            offsets = None if self.adaptive is None else self.adaptive.gamma_offsets()
            focus = gamma if offsets is None else gamma + offsets.to(pred.device)
            call, labels, per_row = self._parse(pred, target, focus, weight, avg_factor,
                                                reduction_override, ignore_index, kwargs)
            loss = compute(call)
            if counting:
                self.adaptive.count(pred, labels, call.inputs.ignore_index, self.use_sigmoid)
            loss = conventions.finish(loss, pred, call.reduction, per_row=per_row)
            if self.learnable_gamma and call.reduction != 'none':
                pull = self.gamma_pull(gamma)
                self.last_gamma_pull = pull.detach()
                loss = loss + pull.to(loss.dtype)
        return self.loss_weight * loss

    def _parse(self, pred, target, gamma, weight, avg_factor, reduction_override,
               ignore_index, extra: dict):
        """mmdet's or mmseg's call with exponent ``gamma``, checked and normalised in one
        pass: ``(LossCall``, the labels the adaptive weights count (or None), whether
        'none' is per row). Reads the adaptive weights of the steps before; changes
        nothing."""
        ignore_index = self.ignore_index if ignore_index is None else check_ignore_index(
            ignore_index)
        labels = None  # a (labels, scores) target's labels
        if isinstance(target, (tuple, list)) and isinstance(pred, Tensor):
            target, labels = conventions.quality_target(pred, target)
        per_row = labels is not None  # QualityFocalLoss's 'none' is per row
        check_call(pred, target, reduction_override, extra)
        reduction = reduction_override or self.reduction
        target = one_hot_as_target(pred, target, self.use_sigmoid,
                                   as_labels=self.adaptive is not None)
        adapt = conventions.pixels if pred.dim() > 2 else conventions.anchors
        target, weight, avg_factor = adapt(
            pred, target, weight, reduction=reduction, avg_factor=avg_factor,
            avg_non_ignore=self.avg_non_ignore, ignore_index=ignore_index,
            use_sigmoid=self.use_sigmoid)
        if per_row and reduction == 'mean' and avg_factor is None:
            avg_factor = pred.shape[0]  # QualityFocalLoss averages its rows
        if self.iou_weighted and target.is_floating_point():
            weight = conventions.quality_weight(target, weight)
        logits = conventions.from_probabilities(pred) if self.activated else pred
        class_weight, mode = (self.class_weight, 'element') if self.adaptive is None \
            else self.adaptive.weights_for(pred, target)
        call = parse(logits, target, gamma, use_sigmoid=self.use_sigmoid, weight=weight,
                     class_weight=class_weight, class_weight_mode=mode, alpha=self.alpha,
                     ignore_index=ignore_index, reduction=reduction, avg_factor=avg_factor,
                     form=self.FORM, labels=labels, **self._form_settings())
        if self.adaptive is not None and labels is None:
            labels = assigned_labels(target) if target.is_floating_point() else target
        return call, labels, per_row

    def _form_settings(self) -> dict:
        """The functional's settings of this loss's form (none for the default)."""
        return {}

    def extra_repr(self) -> str:
        parts = [f'{k}={v}' for k, v in self._form_settings().items()]
        parts += [f'use_sigmoid={self.use_sigmoid}', f'learnable_gamma={self.learnable_gamma!r}',
                 f'alpha={self.alpha}', f'reduction={self.reduction!r}',
                 f'loss_weight={self.loss_weight}', f'avg_non_ignore={self.avg_non_ignore}',
                 f'ignore_index={self.ignore_index}', f'loss_name={self.loss_name!r}']
        parts += [f'{name}=True' for name in ('activated', 'iou_weighted', 'channels_last')
                  if getattr(self, name)]
        if self.class_weight is not None:
            parts.append(f'class_weight={self.class_weight.tolist()}')
        return ', '.join(parts)


@MODELS.register_module()
class NeurocomputingDualFocalLoss(DualFocalLoss):
    """The authors' peer-reviewed form of the Dual Focal Loss (Hossain, Betts,
    Paplinski, Neurocomputing 2021), computed by torch ops (autograd):

    .. math:: \\ell_{nc} = -y\\ln p - \\beta (1 - y)\\ln(\\rho - p) - \\alpha |y - p|^{\\gamma}

    Everything else as :class:`DualFocalLoss` (call conventions, reductions,
    weights, ``ignore_index``, learnable gamma, adaptive weights but
    ``gamma_scale``: here a larger gamma weighs easy negatives more).

    Args:
        alpha (float): the coefficient of ``|y - p|^gamma``, in both modes. Default: 1.
        beta (float): weight of the false classes' term, >= 0. Default: 1.
        rho (float): ``rho >= 1``. Default: 1.
        **kwargs: those of :class:`DualFocalLoss` (not its ``alpha``).
    """

    FORM = 'neurocomputing2021'

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, rho: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = check_form(self.FORM, alpha, beta, rho)
        self.beta, self.rho = float(beta), float(rho)

    def _form_settings(self) -> dict:
        return dict(beta=self.beta, rho=self.rho)
