"""The GPU suite: environment, CUDA tests, the ops and model benchmarks in short mode, one report; within a budget.

Run it as ``bash benchmarks/gpu_suite.sh`` (that script's header says what a machine needs) or directly::

    python benchmarks/gpu_suite.py                 # on a CUDA machine: everything, within 470 s
    python benchmarks/gpu_suite.py --dry-run       # CPU rehearsal: the same steps at toy sizes, CUDA parts skip

Parts, in order, each with a share of ``--budget`` (time a part leaves unused goes to the next one):

* ``env``: check the packages below, install only the missing ones (``.whl/`` at the repo root if present, which
  is how a machine without registry access gets them, else ``pip`` from the registries);
* ``cuda_tests``: ``pytest -m cuda`` without the random sweep, on all cores (pytest-xdist), junit results parsed;
* ``ops``: ``benchmarks/ops.py --short``: NA vs flash/cuDNN dense SDPA and compiled FlexAttention, fwd and
  fwd+bwd, NATTEN's problem then DiNAT's stage shapes at 224 and 1024 (``--tiny`` in the rehearsal);
* ``models``: ``benchmarks/models.py --short``: MaxViT-T vs timm's (same weights), DiNAT-T vs Swin-T, bf16,
  channels-last, training and inference img/s (toy sizes on CPU in the rehearsal);
* ``routed``: ``benchmarks/routed.py --short``: routed attention (BiFormer) vs the official KVGather gather at
  BiFormer-S's stage shapes for 224 and 1024, bf16, fwd and fwd+bwd time and memory (one toy stage on CPU); its
  results go into ``suite.json`` / ``suite.md`` (the device tool brings back at most 8 files);
* ``cuda_sweep``: the triton kernels' random sweep (``pytest -m cuda -k random_sweep``), with what time is left.

A part past its deadline gets SIGINT (pytest then writes what it ran), then SIGKILL; the benchmarks get an inner
budget, skip what they cannot start in time and list it. Results: ``suite.json``, ``suite.md`` (GPU named),
``suite.log``, and the benchmarks' ``ops.{json,md}``, ``models.{json,md}``, under ``--out-dir``, else ``$OUT``,
else ``benchmarks/results/<gpu>/`` (rehearsal: a temporary folder). The markdown is printed last.

Exit code: 0 every part ran completely and every test passed (rehearsal: every non-CUDA part ran); 1 a test
failed or a part crashed; 2 nothing failed but something was skipped or cut short by the budget (or, without
``--dry-run``, there was no CUDA device); 3 the environment could not be set up. Missed speed targets are
reported, not an error.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (distribution, minimum version or None, required): what the suite's parts import
REQUIREMENTS = [('torch', '2.5', True), ('triton', '3.4', True), ('timm', '1.0.31', True), ('numpy', None, True),
                ('pyyaml', None, True), ('pillow', None, True), ('pytest', '7.4', True), ('pytest-xdist', None, False),
                ('matplotlib', None, False)]
PARTS = {'env': 10, 'cuda_tests': 160, 'ops': 140, 'models': 90, 'routed': 30, 'cuda_sweep': 40}  # --budget shares
MIN_START_S = 15  # a part with less time than this left is skipped
TIME_BUDGET = 'time budget spent'  # the benchmarks' reason for what they skipped (benchmarks/ops.py, models.py)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r'\d+', version.split('+')[0])[:3])


def missing_requirements() -> list[tuple[str, str, bool]]:
    """(distribution, why, required) for every requirement that is absent or too old."""
    out = []
    for dist, least, required in REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out.append((dist, 'not installed', required))
            continue
        if least and _version_tuple(version) < _version_tuple(least):
            out.append((dist, f'{version} < {least}', required))
    return out


class Suite:
    """Runs the parts, tees every line to ``suite.log`` and collects what each part reports. ``clock`` (seconds,
    monotonic) is what every deadline and part budget is read from (a test gives a fake one)."""

    def __init__(self, args: argparse.Namespace, out: Path, clock: Callable[[], float] = time.monotonic):
        self.args, self.out, self.clock = args, out, clock
        self.t0 = clock()
        self.end = self.t0 + args.budget
        self.log = (out / 'suite.log').open('w')
        self.parts: list[dict] = []
        self.tmp = Path(tempfile.mkdtemp(prefix='gpu_suite_'))
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        if args.dry_run:
            self.env['CUDA_VISIBLE_DEVICES'] = ''  # the rehearsal never touches a GPU, even on a GPU machine
            self.env['MALLOC_MMAP_THRESHOLD_'] = '65536'  # what ops.py re-executes itself with on CPU

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.log.write(line + '\n')
        self.log.flush()

    def remaining(self) -> float:
        return self.end - self.clock()

    def run(self, cmd: list[str], deadline: float) -> tuple[int | None, bool]:
        """Run ``cmd`` from the repo root, streaming its output; at ``deadline`` SIGINT, 15 s later SIGKILL (its
        whole process group). Returns (exit code, stopped at the deadline)."""
        self.say('$ ' + ' '.join(cmd))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors='replace', start_new_session=True)

        def pump():
            for line in proc.stdout:
                self.say(line.rstrip('\n'))
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stopped = False
        try:
            proc.wait(timeout=max(1., deadline - self.clock()))
        except subprocess.TimeoutExpired:
            stopped = True
            self.say(f'--- deadline: stopping {cmd[1] if len(cmd) > 1 else cmd[0]} (SIGINT)')
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=5)
        return proc.returncode, stopped

    # --- parts ---------------------------------------------------------------------------------------------------

    def part_env(self, deadline: float) -> dict:
        deadline = min(self.end, max(deadline, self.clock() + 120))  # an install may take the later parts' time
        missing = missing_requirements()
        installed, failed = [], []
        wheels = ROOT / '.whl'
        for dist, why, required in missing:
            self.say(f'missing {dist}: {why}')
            if self.args.no_install:
                failed += [dist] if required else []
                continue
            stem = dist.replace('-', '_').lower() + '-'
            local = wheels.is_dir() and any(f.name.lower().startswith(stem) for f in wheels.glob('*.whl'))
            spec = next(f'{d}>={least}' if least else d for d, least, _ in REQUIREMENTS if d == dist)
            cmd = [sys.executable, '-m', 'pip', 'install', '-q', '--no-input']
            cmd += ['--no-index', '--no-deps', '--find-links', str(wheels), spec] if local else [spec]
            rc, _ = self.run(cmd, min(deadline, self.clock() + 180))
            (installed if rc == 0 else failed if required else []).append(dist)
        still = [d for d, _, req in missing_requirements() if req]
        versions = {d: _dist_version(d) for d, _, _ in REQUIREMENTS}
        status = 'failed' if still else 'ok'
        return dict(status=status, reason=f'missing after install: {", ".join(still)}' if still else None,
                    detail=dict(versions=versions, installed=installed, install_failed=failed,
                                missing=[f'{d}: {w}' for d, w, _ in missing]))

    def _pytest(self, deadline: float, select: str) -> dict:
        xml = self.tmp / f'junit_{select.replace(" ", "_")}.xml'
        cmd = [sys.executable, '-m', 'pytest', *cuda_test_files(), '-m', 'cuda', '-k', select, '-q', '-rfE', '-p',
               'no:cacheprovider', f'--junitxml={xml}']
        workers = min(12, os.cpu_count() or 1)
        if self.cuda and workers > 1 and _dist_version('pytest-xdist'):
            cmd += ['-n', str(workers)]
        rc, stopped = self.run(cmd, deadline)
        tests = parse_junit(xml)
        if tests is None:
            return dict(status='failed', reason=f'pytest exited {rc} without results', rc=rc)
        if not self.cuda:
            ran = tests['total'] - tests['skipped']
            status = 'failed' if rc not in (0, 5) or ran else 'skipped'
            return dict(status=status, rc=rc, tests=tests,
                        reason=f"no CUDA device: {tests['total']} tests collected, {tests['skipped']} skipped")
        status = 'partial' if stopped else 'failed' if rc != 0 or tests['failed'] or tests['errors'] else 'ok'
        reason = 'stopped at its deadline: tests not started are missing' if stopped else None
        return dict(status=status, rc=rc, tests=tests, reason=reason)

    def part_cuda_tests(self, deadline: float) -> dict:
        return self._pytest(deadline, 'not random_sweep')

    def part_cuda_sweep(self, deadline: float) -> dict:
        return self._pytest(deadline, 'random_sweep')

    def _bench(self, script: str, deadline: float, reserve: float, extra: list[str], rehearsal: str,
               out: Path | None = None) -> dict:
        inner = max(1., deadline - self.clock() - reserve)
        out = out or self.out
        cmd = [sys.executable, f'benchmarks/{script}.py', '--time-budget', f'{inner:.0f}', '--no-plot',
               '--out-dir', str(out), *extra]
        rc, stopped = self.run(cmd, deadline)
        try:
            data = json.loads((out / f'{script}.json').read_text())
        except (OSError, ValueError):
            return dict(status='failed', rc=rc, reason=f'{script}.py exited {rc} without results')
        skipped = data['skipped'] if script == 'ops' else data['meta']['skipped']
        budget_skips = [s for s in skipped if s['reason'] == TIME_BUDGET]
        status = 'failed' if rc not in (0, None) and not stopped else 'partial' if stopped or budget_skips else 'ok'
        reason = ('stopped at its deadline' if stopped else
                  f'{len(budget_skips)} item(s) skipped for time' if budget_skips else None)
        if not self.cuda and status == 'ok':
            status, reason = 'rehearsed', rehearsal
        left_out = data['meta'].get('peers_left_out', [])
        return dict(status=status, rc=rc, reason=reason, time_skipped=budget_skips, left_out=left_out)

    def part_ops(self, deadline: float) -> dict:
        extra = ['--short'] if self.cuda else ['--tiny', '--threads', '1']
        return self._bench('ops', deadline, 20, extra, 'CPU rehearsal: toy problems, torch backend and eager '
                           'forward-only FlexAttention')

    def part_models(self, deadline: float) -> dict:
        extra = ['--short']
        if not self.cuda:
            extra += ['--img-size', '32', '--batch-size', '2', '--iters', '1', '--warmup', '0', '--threads', '1',
                      '--amp-dtype', 'bfloat16', '--channels-last']  # the GPU settings, at toy sizes
        return self._bench('models', deadline, 30, extra, 'CPU rehearsal: 32x32 images, batch 2, one iteration')

    def part_routed(self, deadline: float) -> dict:
        extra = ['--short'] if self.cuda else ['--sizes', '224', '--stages', '3', '--batch', '1', '--reps', '1']
        part = self._bench('routed', deadline, 10, extra, 'CPU rehearsal: one stage at 224, batch 1, torch backend',
                           out=self.tmp)
        try:
            data = json.loads((self.tmp / 'routed.json').read_text())
        except (OSError, ValueError):
            return part
        part['detail'] = {k: data[k] for k in ('problems', 'rows', 'comparisons', 'targets')}
        section = _section(self.tmp / 'routed.md', '## Comparisons')
        if section:
            part['markdown'] = section.replace('## Comparisons', '## Routed attention vs the official gather', 1)
        return part

    # --- driver --------------------------------------------------------------------------------------------------

    def probe(self) -> dict:
        """Device and versions, read in a child process (this one imports no torch)."""
        code = ('import json, torch; c = torch.cuda.is_available(); print(json.dumps(dict(cuda=c, '
                'device=torch.cuda.get_device_name() if c else None, torch=torch.__version__, '
                'cuda_runtime=torch.version.cuda)))')
        proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            return dict(cuda=False, device=None, error=proc.stderr.strip().splitlines()[-1:])
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def main(self) -> int:
        selected = [p for p in PARTS if p in self.args.parts]
        shares = {p: PARTS[p] for p in selected}
        scale = self.args.budget / sum(shares.values())
        self.cuda, env_ok, cum = False, True, 0.
        info = None
        for name in selected:
            cum += shares[name] * scale
            deadline = min(self.t0 + cum, self.end)
            left = deadline - self.clock()
            if name != 'env' and info is None:
                info = self.probe() if env_ok else dict(cuda=False, device=None)
                self.cuda = bool(info.get('cuda'))
                self.say(f"device: {info.get('device') or 'no CUDA device'}")
            if not env_ok and name != 'env':
                part = dict(status='skipped', reason='environment incomplete')
            elif left < MIN_START_S and name != 'env':
                part = dict(status='skipped', reason=f'{TIME_BUDGET}: {max(left, 0):.0f} s left for it')
            else:
                self.say(f'=== {name} (until +{deadline - self.t0:.0f} s of {self.args.budget:.0f} s)')
                start = self.clock()
                part = getattr(self, f'part_{name}')(deadline)
                part['elapsed_s'] = round(self.clock() - start, 1)
            part = dict(name=name, budget_s=round(max(left, 0), 1), **part)
            self.parts.append(part)
            self.say(f"=== {name}: {part['status']}" + (f" ({part['reason']})" if part.get('reason') else ''))
            if name == 'env':
                env_ok = part['status'] == 'ok'
        info = info or dict(cuda=False, device=None)
        code = exit_code(self.parts, env_ok, self.cuda, self.args.dry_run)
        meta = dict(device=info.get('device') or 'CPU (no CUDA device)', cuda=self.cuda, dry_run=self.args.dry_run,
                    torch=info.get('torch'), cuda_runtime=info.get('cuda_runtime'), python=sys.version.split()[0],
                    commit=_git_commit(), budget_s=self.args.budget, out_dir=str(self.out), exit_code=code,
                    started=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                    elapsed_s=round(self.clock() - self.t0, 1))
        report = dict(meta=meta, parts=self.parts, skipped=skipped_lines(self.parts))
        (self.out / 'suite.json').write_text(json.dumps(report, indent=1))
        md = markdown(report, self.out)
        (self.out / 'suite.md').write_text(md)
        self.say(md)
        self.say(f'wrote {self.out}/suite.json, suite.md, suite.log; exit code {code}')
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return code


# --- reporting -----------------------------------------------------------------------------------------------------

def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    proc = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


def parse_junit(path: Path) -> dict | None:
    """Counts and failing test ids of a pytest junit file (None if pytest wrote none)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = dict(total=0, passed=0, failed=0, errors=0, skipped=0, failures=[])
    for case in root.iter('testcase'):
        counts['total'] += 1
        outcome = next((c for c in case if c.tag in ('failure', 'error', 'skipped')), None)
        if outcome is None:
            counts['passed'] += 1
            continue
        key = {'failure': 'failed', 'error': 'errors', 'skipped': 'skipped'}[outcome.tag]
        counts[key] += 1
        if key != 'skipped':
            message = (outcome.get('message') or '').strip().splitlines()[:1]
            counts['failures'].append(f"{case.get('classname')}::{case.get('name')}: {' '.join(message)[:300]}")
    return counts


def cuda_test_files() -> list[str]:
    """The test files holding ``cuda``-marked tests (collecting only these keeps the rest's imports out)."""
    return sorted(str(f.relative_to(ROOT)) for f in (ROOT / 'tests').glob('test_*.py')
                  if 'pytest.mark.cuda' in f.read_text())


def exit_code(parts: list[dict], env_ok: bool, cuda: bool, dry_run: bool) -> int:
    """See the module docstring."""
    if not env_ok:
        return 3
    if any(p['status'] == 'failed' for p in parts):
        return 1
    if any(p['status'] == 'partial' or p['status'] == 'skipped' and p['reason'].startswith(TIME_BUDGET)
           for p in parts):
        return 2
    return 0 if cuda or dry_run else 2


def skipped_lines(parts: list[dict]) -> list[str]:
    """Every part or item that was skipped or cut short, and why."""
    out = []
    for p in parts:
        if p['status'] in ('skipped', 'partial'):
            out.append(f"{p['name']}: {p['status']} ({p.get('reason')})")
        out += [f"{p['name']}: peer left out: {line}" for line in p.get('left_out', [])]
        for s in p.get('time_skipped', []):
            item = s.get('model') or ' / '.join(x for x in (s.get('problem'), s.get('peer'), s.get('mode')) if x)
            out.append(f"{p['name']}: {item}: {s['reason']}")
    return out


def _section(path: Path, heading: str) -> str | None:
    """The markdown section of ``path`` starting with ``heading`` (up to the next ``## ``), if any."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start = text.find(heading)
    if start < 0:
        return None
    end = text.find('\n## ', start + len(heading))
    return text[start:end if end >= 0 else None].strip()


def markdown(report: dict, out: Path) -> str:
    meta = report['meta']
    lines = [f"# GPU suite on {meta['device']}" + (' (CPU rehearsal)' if meta['dry_run'] else ''), '',
             f"torch {meta['torch']} (CUDA {meta['cuda_runtime']}), python {meta['python']}, commit {meta['commit']}; "
             f"{meta['started']}; {meta['elapsed_s']:.0f} s of a {meta['budget_s']:.0f} s budget; exit code "
             f"{meta['exit_code']}.", '', '| part | status | s used / budget | note |', '|---|---|---:|---|']
    for p in report['parts']:
        used = f"{p['elapsed_s']:.0f} / {p['budget_s']:.0f}" if 'elapsed_s' in p else f"- / {p['budget_s']:.0f}"
        lines.append(f"| {p['name']} | {p['status']} | {used} | {p.get('reason') or ''} |")
    for p in report['parts']:
        t = p.get('tests')
        if t:
            lines += ['', f"{p['name']}: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                          f"{t['skipped']} skipped (of {t['total']} run)."]
            lines += [f'- FAILED {f}' for f in t['failures'][:40]]
            if len(t['failures']) > 40:
                lines.append(f"- ... and {len(t['failures']) - 40} more (suite.json)")
    sections = [_section(out / name, heading) for name, heading in (('ops.md', '## Comparisons'),
                                                                     ('models.md', '## Targets'))]
    sections += [p.get('markdown') for p in report['parts']]
    for section in sections:
        if section:
            lines += ['', section.replace('\n## ', '\n### ').replace('## ', '### ', 1)]
    if report['skipped']:
        lines += ['', '### Skipped or cut short', ''] + [f'- {s}' for s in report['skipped']]
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dry-run', action='store_true', help='CPU rehearsal: CUDA hidden, toy sizes')
    parser.add_argument('--budget', type=float, default=470, help='seconds for all parts (default 470: 7 min 50 s)')
    parser.add_argument('--parts', default=','.join(PARTS), help=f'comma-separated subset of {",".join(PARTS)}')
    parser.add_argument('--no-install', action='store_true', help='only check the environment')
    parser.add_argument('--out-dir', default=None, help='default: $OUT, else benchmarks/results/<gpu> (rehearsal: '
                        'a temporary folder)')
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(',') if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown or not args.parts:
        parser.error(f'--parts: unknown {unknown}; choose from {list(PARTS)}')
    out = args.out_dir or os.environ.get('OUT')
    if out is None and args.dry_run:
        out = tempfile.mkdtemp(prefix='gpu_suite_rehearsal_')
    out = Path(out) if out else None
    if out is None:  # the GPU's name is known once torch is importable: a child process reads it
        proc = subprocess.run([sys.executable, '-c', 'import torch; print(torch.cuda.get_device_name())'],
                              capture_output=True, text=True, cwd=ROOT)
        name = proc.stdout.strip().replace(' ', '_') if proc.returncode == 0 else 'no_cuda_device'
        out = ROOT / 'benchmarks' / 'results' / name
    out.mkdir(parents=True, exist_ok=True)
    return Suite(args, out).main()


if __name__ == '__main__':
    sys.exit(main())
