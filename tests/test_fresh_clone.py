"""The README's paths on a fresh clone (issue 28, items 19 and 20): every demo
config starts with no data/ (each generates its data), and the efficacy study
starts both lanes, stops them all on TERM and leaves the tracked tables alone."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit import ROOT

pytestmark = pytest.mark.slow  # a clone, every demo's short training, the study's start

DEMOS = sorted(p.name for p in (ROOT / 'configs' / 'demo').glob('*.py'))
SHORT = {'det': ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                 'train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=2',
                 'val_dataloader.dataset.indices=2', 'val_dataloader.batch_size=2'],
         'seg': ['train_cfg.max_iters=1', 'train_cfg.val_interval=1',
                 'param_scheduler.0.end=1', 'train_dataloader.batch_size=2',
                 'val_dataloader.dataset.indices=2']}


@pytest.fixture(scope='module')
def clone(tmp_path_factory):
    """A ``git clone`` of HEAD: only what is committed, no data/, no work_dirs/."""
    target = tmp_path_factory.mktemp('fresh') / 'dfl_mm'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(target)], check=True, timeout=120)
    assert not (target / 'data').exists()
    return target


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
                PYTHONWARNINGS='ignore')


def test_every_demo_config_trains_from_a_fresh_clone(clone):
    """Each demo through tools/train.py in the clone (data generated on first use),
    one interpreter for all (imports once); a demo that fails is named."""
    script = (
        'import runpy, sys, traceback\n'
        'train = runpy.run_path("tools/train.py")["main"]\n'
        'short = {"det": sys.argv[1].split(","), "seg": sys.argv[2].split(",")}\n'
        'for demo in sys.argv[3:]:\n'
        '    kind = "det" if demo.startswith(("retinanet", "rtmdet")) else "seg"\n'
        '    try:\n'
        '        train([f"configs/demo/{demo}", "--work-dir", f"work_dirs/{demo}",\n'
        '               "--cfg-options", *short[kind]])\n'
        '        print("trained", demo, flush=True)\n'
        '    except BaseException:\n'
        '        print("failed", demo, traceback.format_exc()[-1500:], flush=True)\n')
    proc = subprocess.run(
        [sys.executable, '-c', script, ','.join(SHORT['det']), ','.join(SHORT['seg']),
         *DEMOS], cwd=clone, env=_env(), capture_output=True, text=True, timeout=1200)
    trained = [line.split()[1] for line in proc.stdout.splitlines()
               if line.startswith('trained ')]
    assert proc.returncode == 0 and trained == DEMOS, \
        proc.stdout[-4000:] + proc.stderr[-2000:]
    assert 'dataset not found' not in proc.stdout + proc.stderr


def _descendants(pid):
    """Every live process whose parent chain reaches ``pid``."""
    children = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid):
    try:
        state = (Path('/proc') / str(pid) / 'stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state != 'Z'


def test_the_efficacy_study_starts_both_lanes_and_stops_them_all(clone):
    tracked = (clone / 'docs' / 'efficacy.md').read_text()
    study = subprocess.Popen(['bash', 'tools/benchmarks/efficacy_study.sh'], cwd=clone,
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    logs = [clone / 'work_dirs' / f'efficacy.lane_{lane}.log' for lane in 'ab']
    deadline = time.time() + 420
    started = [False, False]
    while time.time() < deadline and not all(started) and study.poll() is None:
        time.sleep(3)
        started = [log.exists() and ('(train)' in log.read_text(errors='replace'))
                   for log in logs]
    assert study.poll() is None, study.communicate()[1][-3000:]
    assert all(started), [log.read_text()[-1500:] if log.exists() else 'no log' for log in logs]
    lanes = _descendants(study.pid)
    assert len(lanes) >= 4  # two lane shells and their training processes
    study.send_signal(signal.SIGTERM)
    study.wait(timeout=60)
    time.sleep(2)
    assert [pid for pid in lanes if _alive(pid)] == []
    assert study.returncode != 0
    assert (clone / 'docs' / 'efficacy.md').read_text() == tracked
