"""Small deterministic data for demos, tests and the learnable-gamma sweep."""
