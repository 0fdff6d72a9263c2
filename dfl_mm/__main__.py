"""``python -m dfl_mm train|test|switch|gpu-check [args]`` (see ``dfl_mm.cli``)."""
from dfl_mm.cli import main

main()
