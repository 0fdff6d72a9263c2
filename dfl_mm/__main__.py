"""``python -m dfl_mm train|test|switch|gpu-check [args]`` (see ``dfl_mm.apis.cli``)."""
from dfl_mm.apis.cli import main

main()
