"""Small deterministic data for demos, tests and the learnable-gamma sweep."""
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable


def write_once(root: str, marker: str, fill: Callable[[str], None]) -> str:
    """Create the folder ``root`` by ``fill(tmp)`` unless ``root/marker`` exists.

    ``fill`` writes into a temporary sibling that is renamed into place, so
    processes racing on first use (DDP ranks) never see a half-written dataset.

    Returns:
        str: ``root``.
    """
    if osp.exists(osp.join(root, marker)):
        return root
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(osp.abspath(root))}_', dir=parent)
    try:
        fill(tmp)
        os.rename(tmp, root)
    except OSError:
        if not osp.exists(osp.join(root, marker)):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    return root
