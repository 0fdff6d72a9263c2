"""``dfl_mm.engine``: the runner's side: ``DFLStepHook`` (steps, logging, the
eager optimizer step) and the checkpoint scope; above ``models``, which it drives."""
