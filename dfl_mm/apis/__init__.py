"""``dfl_mm.apis``: tool support: building and launching runners (``launch``),
turning any config into its DFL version (``switch``) and the console entry points
(``cli``)."""
