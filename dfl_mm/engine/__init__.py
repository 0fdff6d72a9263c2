"""``dfl_mm.engine``: the runner's side: ``DFLGammaHook`` (steps, logging, the
eager optimizer step) and the checkpoint scope; above ``models``, which it drives."""
