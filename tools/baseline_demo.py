"""``--mmperf-baseline`` tried as a new user would: a repository with a history.

Builds a git repository in a temporary directory with five benchmarked functions of a multimodal
input pipeline and its blocks (preprocessing, a tokenizer, an MLP, SDPA cross-attention, a patch
embedding; :func:`package`), then three commits, each run as the CI job of a pull
request whose base is the commit before (``pytest --benchmark --mmperf-baseline=HEAD~1``): a
neutral change (nothing may fail), one function 20 % slower (that test alone fails), SDPA
swapped for explicit attention (the attention test alone fails). Each change's own effect is
measured in this process first, so that a change that is not what it claims is told apart from
a comparison that misjudged it. Each run reports the failed tests (JUnit XML), every
comparison's ratio and interval, the wall time of the pytest run (goal: at most 120 s on a
small CI runner) and whether the checkout is untouched afterwards.

Usage::

    python tools/baseline_demo.py [--repeat N] [--json PATH] [--keep] [--no-check]

Prints Markdown tables and the machine; exits 0 when every run went as expected.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commit_repos import (
    checkout_state,
    commit_files,
    git,
    leftovers,
    load_note,
    machine_info,
    machine_line,
)

WALL_GOAL_S = 120.0

PREPROCESS = '''"""Image preprocessing: uint8 images to normalised float tensors."""

import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def preprocess(images: torch.Tensor, size: int = 96) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) float32: antialiased bilinear resize, then
    scaled to [0, 1] and normalised per channel."""
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    return (x / 255.0 - MEAN) / STD
'''

TEXT = '''"""A word-level tokenizer."""

import torch

WORDS = ("a photo of the red cat sitting on wooden table next to blue window in morning light "
         "dog running across green field with ball two people walking along beach at sunset "
         "small boat old city street").split()
VOCAB = {{word: i + 2 for i, word in enumerate(sorted(set(WORDS)))}}  # 0 padding, 1 unknown


def _tokenize(texts: list[str], length: int) -> torch.Tensor:
    flat: list[int] = []
    for text in texts:
        ids = [VOCAB.get(word, 1) for word in text.lower().replace(",", " ").split()][:length]
        flat += ids
        flat += [0] * (length - len(ids))
    return torch.tensor(flat, dtype=torch.int64).view(len(texts), length)


def tokenize(texts: list[str], length: int = 32) -> torch.Tensor:
    """len(texts) strings -> (len(texts), length) int64 ids, 0-padded, 1 for unknown words."""
    out = _tokenize(texts, length)
{check}    return out
'''
TOKENIZE_CHECK = '''    # Must be deterministic: tokenize every fifth text again and compare.
    if not torch.equal(_tokenize(texts[::5], length), out[::5]):
        raise RuntimeError("tokenize: not deterministic")
'''

MODEL = '''"""{doc}"""

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """(..., dim) -> (..., dim) through a GELU hidden layer of ``hidden``."""

    def __init__(self, dim: int = 256, hidden: int = 1024) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CrossAttention(nn.Module):
    """Text tokens (B, Lq, dim) attend to image tokens (B, Lk, dim); returns (B, Lq, dim)."""

    def __init__(self, dim: int = 256, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, lq, d = x.shape
        lk, h = context.shape[1], self.heads
        q = self.q(x).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, h, d // h).permute(2, 0, 3, 1, 4)
{attention}
        return self.proj(out.transpose(1, 2).reshape(b, lq, d))


class PatchEmbed(nn.Module):
    """(N, 3, H, W) float -> (N, (H / patch) * (W / patch), dim) tokens."""

    def __init__(self, dim: int = 256, patch: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).flatten(2).transpose(1, 2)
'''
SDPA = "        out = F.scaled_dot_product_attention(q, k, v)"
EXPLICIT = ("        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5\n"
            "        out = torch.softmax(scores, dim=-1) @ v")
DOC = "Model blocks."
DOC_NEUTRAL = ("Model blocks of the captioning model. Shapes are given per forward; every block "
               "runs in float32.")

TESTS = '''import pytest
import torch

from mypkg.model import MLP, CrossAttention, PatchEmbed
from mypkg.preprocess import preprocess
from mypkg.text import WORDS, tokenize


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8, generator=generator)


def test_preprocess(benchmark, images):
    benchmark(preprocess, images)


def test_tokenize(benchmark):
    texts = [" ".join(WORDS[i % 11:] + WORDS[:i % 11])[: 60 + i % 50] for i in range(512)]
    benchmark(tokenize, texts)


def test_mlp(benchmark):
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(128, 256)
    with torch.no_grad():
        benchmark(model, x)


def test_cross_attention(benchmark):
    torch.manual_seed(0)
    model = CrossAttention().eval()
    text, image = torch.randn(1, 256, 256), torch.randn(1, 1024, 256)
    with torch.no_grad():
        benchmark(model, text, image)


def test_patch_embed(benchmark, images):
    torch.manual_seed(0)
    model, x = PatchEmbed().eval(), images.float()
    with torch.no_grad():
        benchmark(model, x)
'''
TESTS_FILE = "tests/test_benchmarks.py"
TEST_NAMES = ("test_preprocess", "test_tokenize", "test_mlp", "test_cross_attention",
              "test_patch_embed")


def package(doc: str = DOC, check: str = "", attention: str = SDPA) -> dict[str, str]:
    """The package's files at one commit."""
    return {"mypkg/__init__.py": '"""A small multimodal package (pytest-mmperf demo)."""\n',
            "mypkg/preprocess.py": PREPROCESS, "mypkg/text.py": TEXT.format(check=check),
            "mypkg/model.py": MODEL.format(doc=doc, attention=attention)}


@dataclass(frozen=True)
class Change:
    name: str
    message: str
    files: dict[str, str]
    expected_failures: tuple[str, ...]
    module: str  # the changed module (the in-process check compares its two versions)


CHANGES = (
    Change("neutral", "Document the model's shapes (no code change)",
           {**package(doc=DOC_NEUTRAL), "README.md": "# mypkg\n\nBlocks of a captioning model; "
            "shapes are documented in each module.\n"}, (), "mypkg/model.py"),
    Change("slower20", "tokenize: check that tokenizing is deterministic on every fifth text",
           package(doc=DOC_NEUTRAL, check=TOKENIZE_CHECK), ("test_tokenize",), "mypkg/text.py"),
    Change("explicit_attention", "CrossAttention: explicit softmax(q k^T / sqrt(d)) v",
           package(doc=DOC_NEUTRAL, check=TOKENIZE_CHECK, attention=EXPLICIT),
           ("test_cross_attention",), "mypkg/model.py"),
)


def base_files() -> dict[str, str]:
    return {".gitignore": "__pycache__/\n.benchmarks/\n",
            "pytest.ini": "[pytest]\npythonpath = .\ntestpaths = tests\n",
            "README.md": "# mypkg\n", TESTS_FILE: TESTS, **package()}


# ------------------------------------------------------------------ the changes' own effect
def _load(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 - our own text
    return module


def _workload(change: Change, module: types.ModuleType) -> tuple[Any, tuple[Any, ...]]:
    """The changed module's benchmarked callable and its arguments (as the tests build them)."""
    import torch

    if change.module == "mypkg/text.py":
        words = module.WORDS
        texts = [" ".join(words[i % 11:] + words[:i % 11])[: 60 + i % 50] for i in range(512)]
        return module.tokenize, (texts,)
    torch.manual_seed(0)
    model = module.CrossAttention().eval()
    return model, (torch.randn(1, 256, 256), torch.randn(1, 1024, 256))


def check_change(change: Change, before: str, after: str, rounds: int = 15) -> dict[str, Any]:
    """The changed callable before and after ``change``, in this process, one thread,
    interleaved block by block: the median ratio of block times, and whether the outputs
    agree."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        old, new = (_workload(change, _load(src, f"demo_{change.name}_{i}"))
                    for i, src in enumerate((before, after)))
        with torch.no_grad():
            same = torch.allclose(old[0](*old[1]), new[0](*new[1]), atol=1e-5, rtol=1e-4)
            number = max(1, round(0.02 / _once(old)))
            ratios = []
            for r in range(rounds):
                pair = (old, new) if r % 2 == 0 else (new, old)
                times = [_block(work, number) for work in pair]
                t_old, t_new = times if r % 2 == 0 else times[::-1]
                ratios.append(t_new / t_old)
    finally:
        torch.set_num_threads(threads)
    return {"change": change.name, "function": change.module, "ratio": statistics.median(ratios),
            "outputs_agree": bool(same), "threads": 1}


def _once(work: tuple[Any, tuple[Any, ...]]) -> float:
    work[0](*work[1])
    return max(_block(work, 1), 1e-6)


def _block(work: tuple[Any, tuple[Any, ...]], number: int) -> float:
    fn, args = work
    start = time.perf_counter()
    for _ in range(number):
        fn(*args)
    return (time.perf_counter() - start) / number


# ------------------------------------------------------------------ one run
def failed_tests(junit: Path) -> list[str]:
    """The names of the tests that failed or errored in a JUnit XML file."""
    failed = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name", "?"))
    return sorted(failed)


def comparisons(report: dict[str, Any], benchmarks: dict[str, Any] | None
                ) -> list[dict[str, Any]]:
    """One row per baseline comparison of an mmperf JSON report, with pytest-benchmark's median
    per call from its JSON report."""
    medians = {b["name"]: b["stats"]["median"] for b in (benchmarks or {}).get("benchmarks", [])}
    rows = []
    for g in report.get("guards", []):
        if g.get("kind") != "baseline":
            continue
        test = g["nodeid"].split("::")[-1]
        extra = g.get("extra") or {}
        rows.append({
            "test": test, "verdict": g["verdict"], "estimate": g.get("estimate"),
            "ci_low": g.get("ci_low"), "ci_high": g.get("ci_high"),
            "pairs": g.get("n_processes"), "decided_by": g.get("decided_by"),
            "change": extra.get("change"), "threads": extra.get("threads"),
            "wall_s": extra.get("guard_wall_s"), "per_call_s": medians.get(test),
            "message": g.get("message", "").splitlines()[0] if g.get("message") else ""})
    return rows


def judge(change: Change, failed: list[str], rows: list[dict[str, Any]], wall_s: float,
          untouched: bool) -> dict[str, Any]:
    """Did the run go as the change's author would expect?"""
    compared = {r["test"] for r in rows}
    problems = []
    if sorted(change.expected_failures) != failed:
        problems.append(f"failed {failed or 'nothing'}, expected "
                        f"{list(change.expected_failures) or 'nothing'}")
    missing = sorted(set(TEST_NAMES) - compared)
    if missing:
        problems.append(f"not compared: {missing}")
    odd = [f"{r['test']}: {r['verdict']}" for r in rows if r["verdict"] not in ("pass", "fail")]
    if odd:
        problems.append(f"verdicts {odd}")
    if wall_s > WALL_GOAL_S:
        problems.append(f"took {wall_s:.0f} s > {WALL_GOAL_S:.0f} s")
    if not untouched:
        problems.append("the checkout or the temporary folder was not left as it was")
    return {"ok": not problems, "problems": problems}


def run_change(repo: Path, change: Change, out: Path) -> dict[str, Any]:
    """Commit ``change`` and run the pull request's CI job against the commit before."""
    commit = commit_files(repo, change.files, change.message)
    out.mkdir(parents=True)
    tmp = out / "tmp"  # the run's own TMPDIR: what is left there is the run's
    tmp.mkdir()
    report, junit, bench = out / "mmperf.json", out / "junit.xml", out / "benchmark.json"
    command = [sys.executable, "-m", "pytest", "--benchmark", "--mmperf-baseline=HEAD~1",
               f"--mmperf-json={report}", f"--junitxml={junit}", f"--benchmark-json={bench}"]
    before = checkout_state(repo)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False,
                          env={**os.environ, "TMPDIR": str(tmp)})
    wall = time.perf_counter() - start
    (out / "output.txt").write_text(proc.stdout + proc.stderr)
    if not report.exists() or not junit.exists():
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{change.name}: pytest wrote no report (exit {proc.returncode})")
    after = checkout_state(repo)
    left = leftovers(tmp)
    worktrees = git(repo, "worktree", "list").splitlines()
    untouched = after == before and not after[0] and len(worktrees) == 1 and not left
    rows = comparisons(json.loads(report.read_text()),
                       json.loads(bench.read_text()) if bench.exists() else None)
    failed = failed_tests(junit)
    return {"change": change.name, "commit": commit[:12], "exit": proc.returncode,
            "wall_s": wall, "failed": failed, "expected": list(change.expected_failures),
            "untouched": untouched, "status": after[0], "worktrees": len(worktrees),
            "leftovers": left, "comparisons": rows,
            **judge(change, failed, rows, wall, untouched)}


def demo(root: Path, check: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A fresh repository, the base commit and the three changes, each run; and (``check``)
    the changes' own effect measured in-process."""
    repo = root / "repo"
    commit_files(repo, base_files(), "mypkg: preprocessing, tokenizer, MLP, cross-attention, "
                 "patch embedding; benchmark tests")
    checks, runs = [], []
    for change in CHANGES:
        if check:
            before = git(repo, "show", f"HEAD:{change.module}")
            checks.append(check_change(change, before, change.files[change.module]))
        runs.append(run_change(repo, change, root / change.name))
        r = runs[-1]
        print(f"{change.name}: failed {r['failed'] or 'nothing'} in {r['wall_s']:.0f} s"
              f"{'' if r['ok'] else ' -- ' + '; '.join(r['problems'])}", file=sys.stderr,
              flush=True)
    return checks, runs


# ------------------------------------------------------------------ tables
def _num(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, trailing zeros kept (1.00, not 1)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:#.{digits}g}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.2f} ms"


def markdown(results: list[dict[str, Any]]) -> str:
    """The runs (one line each), then every comparison, then the changes' own effect."""
    lines = ["| repeat | commit | expected to fail | failed | as expected | pytest wall "
             f"(goal <= {WALL_GOAL_S:.0f} s) | checkout untouched |", "|" + "---|" * 7]
    for rep, result in enumerate(results, 1):
        for r in result["runs"]:
            lines.append(
                f"| {rep} | {r['change']} ({r['commit'][:7]}) | "
                f"{', '.join(r['expected']) or 'nothing'} | {', '.join(r['failed']) or 'nothing'}"
                f" | {'yes' if r['ok'] else 'NO: ' + '; '.join(r['problems'])} | "
                f"{r['wall_s']:.0f} s | {'yes' if r['untouched'] else 'NO'} |")
    lines += ["", "| repeat | commit | test | verdict | ratio [95 % interval] | pairs | decided "
              "by | threads | wall per comparison | pytest-benchmark median per call |",
              "|" + "---|" * 10]
    for rep, result in enumerate(results, 1):
        for r in result["runs"]:
            for c in r["comparisons"]:
                lines.append(
                    f"| {rep} | {r['change']} | {c['test']} | {c['verdict']} | "
                    f"{_num(c['estimate'])} [{_num(c['ci_low'])}, {_num(c['ci_high'])}] | "
                    f"{c['pairs']} | {c['decided_by']} | {c['threads'] or '–'} | "
                    f"{'–' if c['wall_s'] is None else format(c['wall_s'], '.1f')} s | "
                    f"{_ms(c['per_call_s'])} |")
    checks = [(rep, c) for rep, result in enumerate(results, 1) for c in result["checks"]]
    if checks:
        lines += ["", "| repeat | change | changed function | its own time ratio (in-process, 1 "
                  "thread) | outputs agree |", "|" + "---|" * 5]
        lines += [f"| {rep} | {c['change']} | {c['function']} | {c['ratio']:.3f} | "
                  f"{'yes' if c['outputs_agree'] else 'NO'} |" for rep, c in checks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1,
                        help="build a fresh repository and make the three runs N times")
    parser.add_argument("--json", type=Path, help="also write the results here (after every "
                        "repetition)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (repositories, reports, outputs)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip measuring each change's own effect in-process")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    info = machine_info()
    note = load_note()
    if note:
        print(f"at the start, {note}", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="mmperf-demo-"))
    results: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeat):
            checks, runs = demo(root / f"repeat{rep + 1}", args.check)
            results.append({"checks": checks, "runs": runs})
            if args.json:
                args.json.write_text(json.dumps({"machine": info, "results": results},
                                                indent=1))
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(markdown(results))
    print()
    print(machine_line(info))
    return 0 if all(r["ok"] for result in results for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
