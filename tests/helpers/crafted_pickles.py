"""Hand-written pickle payloads in torch checkpoint files, for the checkpoint-safety tests."""
import zipfile

import torch


def glob(module, name):
    """The GLOBAL opcode: push ``module.name``."""
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def text(value):
    """BINUNICODE: push the str ``value``."""
    return b'X' + len(value).to_bytes(4, 'little') + value.encode()


def write_checkpoint(path, payload):
    """A torch checkpoint file at ``path`` whose data.pkl is ``payload``."""
    torch.save({'x': 1}, path)
    with zipfile.ZipFile(path) as src:
        entries = {name: src.read(name) for name in src.namelist()}
    with zipfile.ZipFile(path, 'w') as out:
        for name, data in entries.items():
            out.writestr(name, payload if name.endswith('data.pkl') else data)
