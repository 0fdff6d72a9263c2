"""``dfl_mm.models``: what mmengine builds from a config: the registered
``DualFocalLoss`` with its exponent (``gamma``) and adaptive class weights
(``adaptive``), the shipped presets and ``DFLSSDHead`` (``heads``, mmdet)."""
