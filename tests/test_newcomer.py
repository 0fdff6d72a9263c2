"""The newcomer's path: the README's commands and messages work as written."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from testkit import ROOT, tool

README = (ROOT / 'README.md').read_text()
HEADINGS = set(re.findall(r'^#+ (.+)$', README, flags=re.M))


def _run(*args, env=None, cwd=None, timeout=300):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), cwd=cwd)


@pytest.mark.parametrize('config, data, demo', [
    ('configs/retinanet_dfl.py', 'data/coco/annotations/instances_train2017.json',
     'configs/demo/retinanet_r18_dfl_demo.py'),
    ('configs/deeplabv3_dfl.py', 'data/cityscapes/leftImg8bit/train',
     'configs/demo/deeplabv3_r18_dfl_demo.py'),
])
def test_missing_dataset_names_a_real_readme_section_and_the_tasks_demo(in_tmp, config, data,
                                                                       demo):
    train_tool = tool('train')
    with pytest.raises(SystemExit) as error:
        train_tool.main([str(ROOT / config)])
    message = str(error.value)
    assert data in message and f'python tools/train.py {demo}' in message, message
    section = re.search(r'see README, "([^"]+)"', message).group(1)
    assert section in HEADINGS, (section, sorted(HEADINGS))
    assert (ROOT / demo).is_file()


def test_tools_resolve_a_shipped_config_by_its_file_name(in_tmp):
    train_tool = tool('train')
    with pytest.raises(SystemExit, match='dataset not found: train_dataloader expects '
                                         "'data/coco"):
        train_tool.main(['retinanet_dfl.py'])  # found under configs/, then its data is missing
    with pytest.raises(SystemExit, match='config file not found: nope.py'):
        train_tool.main(['nope.py'])


def test_python_m_dfl_mm_help_lists_the_commands_and_exits_0():
    proc = _run(sys.executable, '-m', 'dfl_mm', '--help')
    assert proc.returncode == 0, proc.stderr
    for command in ('train', 'test', 'switch', 'gpu-check'):
        assert re.search(rf'^  {command} +\S', proc.stdout, flags=re.M), proc.stdout
    assert _run(sys.executable, '-m', 'dfl_mm').returncode == 2
    wrong = _run(sys.executable, '-m', 'dfl_mm', 'trian')
    assert wrong.returncode == 1 and "unknown command 'trian'" in wrong.stderr


def test_python_m_dfl_mm_finds_a_shipped_config_by_name(tmp_path):
    # a file name from a config folder (configs/retinanet/), not only configs/ itself
    proc = _run(sys.executable, '-m', 'dfl_mm', 'train', 'retinanet_r18_fpn_dfl_1x_coco.py',
                cwd=tmp_path)
    assert 'dataset not found' in proc.stderr and 'Config file not found' not in proc.stderr, \
        proc.stderr[-2000:]


@pytest.mark.skipif(shutil.which('mim', path=os.path.dirname(sys.executable)) is None,
                    reason='openmim is not installed (bash tools/install.sh --tests)')
def test_mim_finds_shipped_configs_on_the_installers_editable_install(tmp_path):
    mim = os.path.join(os.path.dirname(sys.executable), 'mim')
    proc = _run(mim, 'train', 'dfl_mm', 'retinanet_dfl.py', '--gpus', '0', cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert str(ROOT / 'configs' / 'retinanet_dfl.py') in out, out[-2000:]
    assert 'dataset not found' in out  # our train.py ran on it


def test_launch_scripts_find_the_installers_environment(tmp_path):
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'python').write_text('#!/bin/sh\n')
    (venv / 'bin' / 'python').chmod(0o755)
    script = f'source {ROOT / "tools" / "_python.sh"}; echo "$PY"'
    clean = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'VIRTUAL_ENV')}

    def py(**env):
        proc = subprocess.run(['bash', '-c', script], capture_output=True, text=True,
                              env=dict(clean, **env))
        return proc.stdout.strip()
    assert py(VENV=str(venv)) == str(venv / 'bin' / 'python')
    assert py(VENV=str(venv), VIRTUAL_ENV='/some/env') == 'python'  # an active env wins
    assert py(VENV=str(venv), PYTHON='/usr/bin/python3') == '/usr/bin/python3'
    assert py(VENV=str(tmp_path / 'none')) in ('python', str(ROOT / '.venv' / 'bin' / 'python'))


@pytest.mark.slow
def test_run_tests_runs_what_is_named_and_everything_otherwise():
    proc = _run('bash', str(ROOT / 'tools' / 'run_tests.sh'), 'tests/test_install.py',
                '--collect-only', '-q', cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    collected = [line for line in proc.stdout.splitlines() if '::' in line]
    assert collected and all(line.startswith('tests/test_install.py::') for line in collected)
    proc = _run('bash', str(ROOT / 'tools' / 'run_tests.sh'), '--collect-only', '-q', '-k',
                'test_progress_reports', cwd=ROOT, timeout=900)
    assert 'tests/test_install.py::test_progress_reports' in proc.stdout, proc.stdout[-2000:]


def test_one_config_resolver_for_every_tool(in_tmp):
    """A path, mmdet::/mmseg:: and a shipped config by name resolve alike in every tool
    (dfl_mm.apis.cli.resolve_config)."""
    from dfl_mm.apis.cli import resolve_config

    from testkit import ROOT
    local = in_tmp / 'mine.py'
    local.write_text('x = 1\n')
    assert resolve_config('mine.py') == str(local)
    assert resolve_config('retinanet_dfl.py') == str(ROOT / 'configs' / 'retinanet_dfl.py')
    upstream = resolve_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    assert upstream.endswith('mmdet/.mim/configs/retinanet/retinanet_r50_fpn_1x_coco.py')
    with pytest.raises(SystemExit, match="train: mmcls::x.py: package 'mmcls' is not"):
        resolve_config('mmcls::x.py', 'train')
    with pytest.raises(SystemExit, match='no such config in mmseg'):
        resolve_config('mmseg::nope/nope.py')
    # mmengine's _base_ knows lower-case scopes only: a config naming MMDET:: would not load
    with pytest.raises(SystemExit, match='scopes are lower case.*mmdet::retinanet/x.py'):
        resolve_config('MMDET::retinanet/x.py')
