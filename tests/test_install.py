"""The installer's build progress (tools/_build_progress.sh) on a fake build."""
import os
import subprocess
import time

import pytest

from testkit import ROOT

pytestmark = pytest.mark.slow  # the installer


def test_progress_reports_steps_elapsed_time_and_time_left(tmp_path):
    log = tmp_path / 'build.log'
    log.write_text('')
    build = subprocess.Popen(['sleep', '5'])
    progress = subprocess.Popen(
        ['bash', str(ROOT / 'tools' / '_build_progress.sh'), str(log), str(build.pid),
         'mmcv build'], env=dict(os.environ, PROGRESS_INTERVAL='1'),
        stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)  # a first tick with no step yet must not stop the reporter
    with open(log, 'a') as f:
        f.write('  [1/4] c++ -c a.cpp\nwarning: unused variable\n')
    time.sleep(1.5)
    with open(log, 'a') as f:
        f.write('  [3/4] c++ -c c.cpp\n')
    build.wait()  # reaped, as install.sh's `wait` does: then the reporter stops
    out, _ = progress.communicate(timeout=30)
    lines = [line for line in out.splitlines() if line]
    assert any(line.startswith('[install] mmcv build: step 1 of 4, 0 min ') for line in lines), out
    step3 = [line for line in lines if 'step 3 of 4' in line]
    assert step3 and step3[0].endswith('min left'), out
    assert not any('warning' in line for line in lines)  # compiler output stays in the log
    assert progress.returncode == 0  # it ends with the build


def test_install_help_prints_the_usage_and_nothing_of_the_script():
    proc = subprocess.run(['bash', str(ROOT / 'tools' / 'install.sh'), '--help'],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.startswith('Install the OpenMMLab stack')
    assert 'bash tools/install.sh [--tests]' in proc.stdout and 'TORCH_SPEC' in proc.stdout
    assert 'set -euo' not in proc.stdout and 'ROOT=' not in proc.stdout
    assert not any(line.startswith('#') for line in proc.stdout.splitlines())
