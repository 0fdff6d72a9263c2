import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

# What OpenMMLab projects ship inside the package (dfl_mm/.mim), so that
# `mim train dfl_mm CONFIG` and `mmdet::`-style tools find configs and tools.
MIM_FILES = ('configs', 'tools', 'model-index.yml', 'LICENSE', 'README.md')


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'dfl_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def parse_requirements(path):
    """Requirement lines of a file, following ``-r`` includes; comments dropped."""
    requirements = []
    with open(path) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line.startswith('-r '):
                requirements += parse_requirements(
                    osp.join(osp.dirname(path), line[3:].strip()))
            elif line:
                requirements.append(line)
    return requirements


def add_mim_extension():
    """Put ``MIM_FILES`` into ``dfl_mm/.mim``: symlinks for an editable install,
    copies for a built wheel or sdist (mmdet's ``add_mim_extension``)."""
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        mode = 'symlink'
    elif commands & {'sdist', 'bdist_wheel', 'install', 'build'}:
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim = osp.join(root, 'dfl_mm', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES:
        source, target = osp.join(root, name), osp.join(mim, name)
        if osp.islink(target) or osp.isfile(target):
            os.remove(target)
        elif osp.isdir(target):
            shutil.rmtree(target)
        if mode == 'symlink':
            os.symlink(osp.relpath(source, mim), target)
        elif osp.isdir(source):
            shutil.copytree(source, target,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(source, target)


here = osp.dirname(osp.abspath(__file__))
add_mim_extension()
setup(
    name='dfl_mm',
    version=read_version(),
    description='Dual Focal Loss for OpenMMLab detection and segmentation',
    long_description=open(osp.join(here, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['dfl_mm', 'dfl_mm.*']),
    # the CPU kernel's C source (compiled on first use, dfl_mm/ops/cpu.py) and
    # the configs, tools and model index for mim (dfl_mm/.mim)
    package_data={'dfl_mm': ['ops/csrc/*.c', '.mim/*', '.mim/**/*']},
    entry_points={'console_scripts': [
        'dfl-train=dfl_mm.apis.cli:train', 'dfl-test=dfl_mm.apis.cli:test',
        'dfl-switch=dfl_mm.apis.cli:switch', 'dfl-gpu-check=dfl_mm.apis.cli:gpu_check']},
    python_requires='>=3.9',
    # mmcv must be built against the installed torch, so it is not an install
    # requirement: tools/install.sh installs it (see requirements/mminstall.txt).
    install_requires=['torch', 'mmengine>=0.10.0'],
    extras_require={
        'tests': parse_requirements(osp.join(here, 'requirements', 'tests.txt')),
        'mim': parse_requirements(osp.join(here, 'requirements', 'mminstall.txt')),
        'all': parse_requirements(osp.join(here, 'requirements', 'runtime.txt')),
    },
    license='Apache License 2.0',
    license_files=['LICENSE'],
)
