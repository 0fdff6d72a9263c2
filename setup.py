import os.path as osp

from setuptools import find_packages, setup


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


here = osp.dirname(osp.abspath(__file__))
setup(
    name='dfl_mm',
    version=read_version(),
    description='Dual Focal Loss for OpenMMLab detection and segmentation',
    long_description=open(osp.join(here, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['dfl_mm', 'dfl_mm.*']),
    # the CPU kernel's C source, compiled on first use (dfl_mm/cpu_kernel.py)
    package_data={'dfl_mm': ['csrc/*.c']},
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
)
