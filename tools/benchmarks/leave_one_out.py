"""The detection default, chosen by leave-one-set-out (issue 34).

Study tooling over per-(set, row) summaries: ``mean``, ``sd``, ``worst`` (mAP, %),
``head`` / ``mid`` / ``tail`` (mean AP of the most / middle / least frequent
classes, %; ``mid`` None for halves), ``seeds`` and ``source``. A row *passes*
a long tail when it is level with or ahead of FocalLoss by the mean and by the
worst seed, its head AP is at most 1 below FocalLoss's and its tail AP is not
below FocalLoss's:

.. math:: \\bar m \\ge \\bar m_F,\\ m_{worst} \\ge m_{F,worst},\\ h \\ge h_F - 1,\\ t \\ge t_F

For each long tail S in turn, the setting is picked on the other sets alone
(the most sets passed, then the largest mean worst-seed margin over FocalLoss)
and judged on S. The default must pass on every left-out set; where no setting
does, the default is the one never behind FocalLoss's mean by more than its own
spread (sd over seeds), :func:`within_spread`.
"""
import json
import re
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

BASELINE = 'focal'
HEAD_SLACK = 1.0


def margins(mine: dict, focal: dict) -> dict:
    """The row's differences to FocalLoss on one set (points of AP)."""
    return {key: mine[key] - focal[key] for key in ('mean', 'worst', 'head', 'tail')}


def passes(margin: dict) -> bool:
    return (margin['mean'] >= 0 and margin['worst'] >= 0 and margin['head'] >= -HEAD_SLACK
            and margin['tail'] >= 0)


def judge(summaries: Dict[Tuple[str, str], dict], task: str, row: str) -> Optional[dict]:
    """``margins`` plus ``ok`` of ``row`` on ``task``, or None where either is not run."""
    mine, focal = summaries.get((task, row)), summaries.get((task, BASELINE))
    if mine is None or focal is None:
        return None
    margin = margins(mine, focal)
    return dict(margin, ok=passes(margin))


def eligible(summaries, tasks: Sequence[str], rows: Sequence[str],
             min_seeds: int = 1) -> List[str]:
    """The ``rows`` run with ``min_seeds`` seeds or more on every one of ``tasks`` (a
    screen's single seed is its worst: not comparable with five)."""
    return [row for row in rows
            if all(summaries.get((task, row), {}).get('seeds', 0) >= min_seeds
                   for task in tasks)]


def pick(summaries, tasks: Sequence[str], candidates: Sequence[str]) -> Tuple[str, int, float]:
    """The candidate passing the most of ``tasks`` (ties: the largest mean worst-seed
    margin): (row, sets passed, mean worst margin). A set where a candidate is not
    run counts as failed."""
    best = None
    for row in candidates:
        verdicts = [judge(summaries, task, row) for task in tasks]
        passed = sum(bool(v and v['ok']) for v in verdicts)
        worst = [v['worst'] if v else -100.0 for v in verdicts]
        key = (passed, statistics.mean(worst) if worst else 0.0)
        if best is None or key > best[1:]:
            best = (row, *key)
    return best


def leave_one_set_out(summaries, tasks: Sequence[str], candidates: Sequence[str]) -> List[dict]:
    """One line per long tail: the pick on the others and how it does on it."""
    lines = []
    for held_out in tasks:
        others = [t for t in tasks if t != held_out]
        row, passed, worst = pick(summaries, others, candidates)
        lines.append(dict(held_out=held_out, row=row, passed_others=passed,
                          others=len(others), verdict=judge(summaries, held_out, row)))
    return lines


def table(summaries, tasks: Sequence[str], rows: Sequence[str]) -> str:
    """Markdown: every set x every row, mean ± sd (worst) / head / mid / tail."""
    out = ['| set | row | seeds | mAP mean ± sd (worst) | head | mid | tail | vs focal: mean / '
           'worst / head / tail | passes |', '|---|---|---:|---|---:|---:|---:|---|:---:|']
    for task in tasks:
        for row in rows:
            s = summaries.get((task, row))
            if s is None:
                continue
            v = judge(summaries, task, row) if row != BASELINE else None
            vs = '-' if v is None else ' / '.join(f"{v[k]:+.1f}" for k in
                                                   ('mean', 'worst', 'head', 'tail'))
            mid = '-' if s.get('mid') is None else f"{s['mid']:.1f}"
            mark = '-' if v is None else ('✓' if v['ok'] else '✗')
            source = '' if s.get('source', 'this study') == 'this study' else f" ({s['source']})"
            out.append(f"| {task} | {row}{source} | {s['seeds']} | {s['mean']:.1f} ± "
                       f"{s['sd']:.1f} ({s['worst']:.1f}) | {s['head']:.1f} | {mid} | "
                       f"{s['tail']:.1f} | {vs} | {mark} |")
    return '\n'.join(out)


def loso_table(lines: List[dict]) -> str:
    out = ['| left out | picked on the others (sets passed) | on the left-out set: mean / worst / '
           'head / tail vs focal | passes |', '|---|---|---|:---:|']
    for line in lines:
        v = line['verdict']
        cells = '-' if v is None else ' / '.join(f'{v[k]:+.1f}' for k in
                                                 ('mean', 'worst', 'head', 'tail'))
        mark = '-' if v is None else ('✓' if v['ok'] else '✗')
        out.append(f"| {line['held_out']} | {line['row']} ({line['passed_others']}/"
                   f"{line['others']}) | {cells} | {mark} |")
    return '\n'.join(out)


_CELL = re.compile(r'^\s*(-?[\d.]+) ± ([\d.]+)\s*$')


def parse_tables(text: str, tasks: Sequence[str], source: str) -> Dict[Tuple[str, str], dict]:
    """Summaries from the long-tail tables of ``benchmark_efficacy.py`` (markdown as
    written by its ``summarise``): the first table of each task in ``text``."""
    found = {}
    for task in tasks:
        match = re.search(rf'^\*\*{re.escape(task)}\*\*, .*?\((seeds \[([\d, ]+)\])', text, re.M)
        if match is None:
            continue
        seeds = len(match.group(2).split(','))
        body = text[match.end():].split('\n\n', 2)[1]
        header, _, *rows = body.strip().splitlines()
        columns = [c.strip() for c in header.strip('|').split('|')]
        for line in rows:
            cells = dict(zip(columns, (c.strip() for c in line.strip('|').split('|'))))
            mean = _CELL.match(cells['bbox mAP'])
            head, tail = _CELL.match(cells['head AP']), _CELL.match(cells['tail AP'])
            found[(task, cells['loss'])] = dict(
                mean=float(mean.group(1)), sd=float(mean.group(2)),
                worst=float(cells['worst bbox mAP']), head=float(head.group(1)), mid=None,
                tail=float(tail.group(1)), seeds=seeds, source=source)
    return found


def within_spread(summaries, tasks: Sequence[str], row: str) -> List[Tuple[str, float, float]]:
    """(task, mean minus FocalLoss's mean, the row's sd) where ``row`` is behind by
    more than its spread (empty: never)."""
    out = []
    for task in tasks:
        mine, focal = summaries.get((task, row)), summaries.get((task, BASELINE))
        if mine is not None and focal is not None and mine['mean'] - focal['mean'] < -mine['sd']:
            out.append((task, mine['mean'] - focal['mean'], mine['sd']))
    return out


def load_external(path: str) -> Dict[Tuple[str, str], dict]:
    """Summaries of sets measured elsewhere (per-seed mAP, head / mid / tail means)."""
    with open(path) as f:
        data = json.load(f)
    out = {}
    for task, rows in data['sets'].items():
        for row, r in rows.items():
            seeds = r['seeds']
            out[(task, row)] = dict(
                mean=statistics.mean(seeds), sd=statistics.stdev(seeds) if len(seeds) > 1
                else 0.0, worst=min(seeds), head=r['head'], mid=r['mid'], tail=r['tail'],
                seeds=len(seeds), source='issue 34, held out')
    return out
