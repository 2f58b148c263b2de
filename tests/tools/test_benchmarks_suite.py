"""The asv suite's case registry (benchmarks/cases.py, training_cases.py), its inputs, ratios and
classes, its config and the gate script.

Run from the repository root (``python -m pytest``), so that ``benchmarks`` is importable.
Every workload built here is a small ad-hoc case; the registry's real sizes are only inspected.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import asv_base, cases, inputs, ratios
from benchmarks.cases import AttentionCase, LoaderCase, LongSequenceCase, PreprocessCase
from benchmarks.inputs import Workload
from benchmarks.training_cases import LOADER_TRAINING_CASES, TRAINING_CASES

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import perf_gate  # noqa: E402

# Every registry of benchmarks/cases.py (ATTENTION_CASES, LONG_CASES, PREPROCESS_CASES, ...).
REGISTRIES: dict[str, dict[str, Any]] = {name: registry for name, registry in vars(cases).items()
                                         if name.endswith("_CASES")}
SMALL_ATTN = AttentionCase("t-attn", batch_size=2, text_tokens=8, image_tokens=16, dim=32,
                           heads=4)
SMALL_LONG = LongSequenceCase("t-long", tokens=64, text_tokens=8, dim=32, heads=4, window=256)
SMALL_PRE = PreprocessCase("t-pre", batch_size=3, min_side=64, max_side=96)


def _bench_classes() -> list[Any]:
    mods = [importlib.import_module(f"benchmarks.{m}")
            for m in ("bench_attention", "bench_preprocess", "bench_training")]
    return [obj for mod in mods for _, obj in inspect.getmembers(mod, inspect.isclass)
            if obj.__module__ == mod.__name__]


def _all_params() -> dict[str, list[list[str]]]:
    return {cls.__name__: cls.params for cls in _bench_classes()}


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("registry", sorted(REGISTRIES))
def test_registry_keys_are_case_names(registry: str) -> None:
    found = REGISTRIES[registry]
    assert found, f"{registry} is empty"
    for key, case in found.items():
        assert key == case.name
        assert dataclasses.is_dataclass(case) and case.__dataclass_params__.frozen  # type: ignore


_PRETEND_GPU_HOST = """
import importlib, inspect, json, sys
import torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 4
import pytest_mmperf.devices
pytest_mmperf.devices.has_native_bf16 = lambda device="cpu", cpuinfo=None: False
out = {}
for m in ("bench_attention", "bench_preprocess", "bench_training"):
    mod = importlib.import_module("benchmarks." + m)
    for name, cls in inspect.getmembers(mod, inspect.isclass):
        if cls.__module__ == mod.__name__:
            out[name] = cls.params
json.dump(out, sys.stdout)
"""


def test_params_do_not_depend_on_the_host() -> None:
    """Import the suite in a fresh process that pretends to have 4 GPUs and no native bf16:
    the params must be the ones this host sees (asv compares results by parameter)."""
    here = _all_params()
    assert here["CrossAttentionForward"][2] == ["cpu", "cuda"]
    proc = subprocess.run([sys.executable, "-c", _PRETEND_GPU_HOST], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == here


def test_bench_classes_are_well_formed() -> None:
    classes = _bench_classes()
    assert {"CrossAttentionForward", "LongSequenceAttention", "PreprocessBatch",
            "LoadJpegBatch"} <= {c.__name__ for c in classes}
    for cls in classes:
        assert len(cls.params) == len(cls.param_names), cls.__name__
        assert all(isinstance(v, str) for values in cls.params for v in values), cls.__name__
        benches = [n for n in dir(cls) if n.startswith(("time_", "peakmem_", "track_"))]
        assert benches, f"{cls.__name__} has no benchmark"
        for name in benches:
            parameters = list(inspect.signature(getattr(cls, name)).parameters.values())[1:]
            varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)  # asv accepts *params
            assert varargs or len(parameters) == len(cls.param_names), f"{cls.__name__}.{name}"
            if name.startswith("track_"):
                assert getattr(getattr(cls, name), "unit", None) in (
                    "ops", "flops", "bytes", "ratio", "images/s", "fraction"
                ), f"{cls.__name__}.{name} lacks a unit"


# ------------------------------------------------------------------- determinism


def _cross(case: AttentionCase) -> tuple[torch.Tensor, torch.Tensor]:
    return inputs.cross_features(case.feature_spec(), case.seed, "cpu")


def _module(case: AttentionCase, impl: str) -> torch.nn.Module:
    return inputs.cross_attention(impl, case.dim, case.heads, case.seed, "cpu")


def _qkv(case: LongSequenceCase) -> tuple[torch.Tensor, ...]:
    return inputs.joint_qkv(case.feature_spec(), case.seed, "cpu")


def test_inputs_and_weights_are_deterministic() -> None:
    images = [img.tobytes() for img in SMALL_PRE.images()]
    text, image = _cross(SMALL_ATTN)
    weights = [p.clone() for p in _module(SMALL_ATTN, "sdpa").parameters()]
    q, k, v = (x.clone() for x in _qkv(SMALL_LONG))
    rng_before = torch.get_rng_state()
    torch.manual_seed(12345)  # a caller's RNG state must not change the cases
    inputs.clear_caches()
    assert [img.tobytes() for img in SMALL_PRE.images()] == images
    text2, image2 = _cross(SMALL_ATTN)
    assert torch.equal(text, text2) and torch.equal(image, image2)
    rebuilt = list(_module(SMALL_ATTN, "sdpa").parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, rebuilt, strict=True))
    assert all(torch.equal(a, b) for a, b in zip((q, k, v), _qkv(SMALL_LONG), strict=True))
    state = torch.get_rng_state()
    inputs.clear_caches()
    _module(SMALL_ATTN, "math")
    assert torch.equal(torch.get_rng_state(), state), "building a module moved the global RNG"
    torch.set_rng_state(rng_before)


def test_backends_of_one_case_share_weights_and_agree() -> None:
    outs = {impl: SMALL_ATTN.build(impl)() for impl in ("math", "sdpa", "mha")}
    assert outs["math"].shape == (2, 8, 32)
    torch.testing.assert_close(outs["sdpa"], outs["math"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["mha"], outs["math"], atol=1e-5, rtol=1e-5)
    assert SMALL_ATTN.build("seed")().shape == (2, 8, 16)  # the seed returns weights


def test_long_sequence_impls_agree_when_the_window_covers_everything() -> None:
    dense = SMALL_LONG.build("math")()
    assert dense.shape == (1, 4, 64, 8)
    torch.testing.assert_close(SMALL_LONG.build("sdpa")(), dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(SMALL_LONG.build("local")(), dense, atol=1e-5, rtol=1e-5)
    assert SMALL_LONG.flops("local") == SMALL_LONG.flops("math")  # window 256 >= 2N - 1


def test_preprocess_impls_agree() -> None:
    naive = SMALL_PRE.build("naive")()
    batched = SMALL_PRE.build("batched")()
    assert naive.shape == batched.shape == (3, 3, 224, 224)
    assert (naive - batched).abs().max().item() <= 0.05


def test_loader_case_reads_its_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMPERF_BENCH_CACHE", str(tmp_path))
    inputs.cache_dir.cache_clear()
    try:
        case = LoaderCase("t-jpeg", images=3, min_side=300, max_side=400, workers=0)
        first = case.dataset()
        assert first.root.parent == tmp_path and len(first) == 3
        mtimes = [p.stat().st_mtime_ns for p in first.paths]
        assert [p.stat().st_mtime_ns for p in case.dataset().paths] == mtimes  # reused
        fast = case.build("fast")
        batch = fast()
        fast.close()
        assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    finally:
        inputs.cache_dir.cache_clear()


def test_close_loader_workers_stops_persistent_workers() -> None:
    """The one reader of DataLoader's private ``_iterator``: fails when it stops working."""
    import multiprocessing

    from torch.utils.data import DataLoader

    loader = DataLoader(list(range(4)), batch_size=2, num_workers=1, persistent_workers=True)
    before = set(multiprocessing.active_children())
    assert len(list(loader)) == 2
    assert set(multiprocessing.active_children()) - before, "no persistent worker to stop"
    inputs.close_loader_workers(loader)
    assert not set(multiprocessing.active_children()) - before


# ------------------------------------------------------------ unsupported combinations


@pytest.mark.parametrize("case", [SMALL_ATTN, SMALL_LONG, SMALL_PRE,
                                  LoaderCase("t", images=1, min_side=64, max_side=64)],
                         ids=lambda c: type(c).__name__)
def test_cuda_without_a_gpu_is_not_implemented(case: Any, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    impl = {"AttentionCase": "sdpa", "LongSequenceCase": "sdpa", "PreprocessCase": "batched",
            "LoaderCase": "fast"}[type(case).__name__]
    with pytest.raises(NotImplementedError, match="no CUDA device"):
        case.build(impl, "float32", "cuda")


def test_bf16_without_native_support_is_not_implemented(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_mmperf.devices

    monkeypatch.setattr(pytest_mmperf.devices, "has_native_bf16",
                        lambda device="cpu", cpuinfo=None: False)
    with pytest.raises(NotImplementedError, match="no native bf16"):
        SMALL_ATTN.build("sdpa", "bfloat16", "cpu")
    monkeypatch.setattr(pytest_mmperf.devices, "has_native_bf16",
                        lambda device="cpu", cpuinfo=None: True)
    out = SMALL_ATTN.build("sdpa", "bfloat16", "cpu")()
    assert out.dtype == torch.bfloat16  # autocast really applied


def test_excluded_combination_is_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="excluded"):
        cases.ATTENTION_CASES["clip-b4"].build("mha", "bfloat16", "cpu")


@pytest.mark.parametrize(("args", "match"), [
    (("bogus",), "accepted: seed, math, sdpa, mha"),
    (("sdpa", "float64"), "accepted: float32, bfloat16"),
    (("sdpa", "float32", "tpu"), "accepted: cpu, cuda"),
])
def test_bad_values_raise_value_error(args: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SMALL_ATTN.build(*args)


# ------------------------------------------------------------------- measurement


def test_counters_are_deterministic_and_tell_implementations_apart() -> None:
    math_w, sdpa_w = SMALL_LONG.build("math"), SMALL_LONG.build("sdpa")
    assert ratios.counters(math_w, "ops") == ratios.counters(math_w, "ops")
    assert ratios.counters(sdpa_w, "ops") < ratios.counters(math_w, "ops")
    assert ratios.counters(math_w, "peak_memory") > ratios.counters(sdpa_w, "peak_memory")
    assert ratios.counters(math_w, "flops") == SMALL_LONG.flops("math")


def _sleeper(seconds: float, name: str) -> Workload:
    return Workload("t", name, "cpu", "float32", lambda: time.sleep(seconds))


def test_interleaved_ratio_is_candidate_over_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ratios.QUICK_ENV, raising=False)
    slow, fast = _sleeper(0.01, "slow"), _sleeper(0.001, "fast")
    # Sleeps last at least as long as asked: the slow side can only look slower.
    assert ratios.interleaved_ratio(slow, fast, budget_s=0.2, min_blocks=3) > 1.5
    assert ratios.interleaved_ratio(fast, slow, budget_s=0.2, min_blocks=3) < 1 / 1.5
    monkeypatch.setenv(ratios.QUICK_ENV, "1")
    assert ratios.interleaved_ratio(slow, fast) > 1.5
    other = Workload("t", "x", "cuda:0", "float32", lambda: None)
    with pytest.raises(ValueError, match="needs one device"):
        ratios.interleaved_ratio(slow, other)


def test_bench_threads_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(asv_base.THREADS_ENV, raising=False)
    assert asv_base.bench_threads() == 1
    monkeypatch.setenv(asv_base.THREADS_ENV, "3")
    assert asv_base.bench_threads() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(asv_base.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=f"MMPERF_BENCH_THREADS={bad!r}"):
            asv_base.bench_threads()


# ----------------------------------------------------------------- config and gate


def test_asv_config_installs_torch_once_and_the_project_without_deps() -> None:
    from asv.util import load_json

    conf = load_json(str(ROOT / "asv.conf.json"), api_version=1, js_comments=True)
    assert conf["environment_type"] == "virtualenv" and conf["pythons"] == ["3.11"]
    assert conf["matrix"]["req"]["torch"] == "2.14.1"
    assert conf["matrix"]["req"]["torchvision"] == "0.29.1"
    for key in ("build_command", "install_command"):
        assert all("--no-deps" in cmd for cmd in conf[key]), key
    for key in ("env_dir", "results_dir", "html_dir"):
        assert conf[key].startswith(".asv/"), key


PIPE_TABLE = """
| Change | Before [aaaa1111] | After [bbbb2222] | Ratio | Benchmark (Parameter) |
|--------|-------------------|------------------|-------|-----------------------|
| +      | 23.4±4ms | 70.1±5ms |  3.00 | bench_p.PreprocessBatch.time_preprocess('batched', 'cpu') |
|        | 387      | 387      |  1.00 | bench_p.PreprocessCounters.track_ops('naive', 'cpu') |
| !      | 1.0      | failed   |   n/a | bench_a.X.time_y('sdpa', 'cpu') |
| -      | 2.0s     | 1.0s     | ~0.50 | bench_a.Y.time_z |
"""

SIMPLE_TABLE = """
Change   Before [aaaa1111]    After [bbbb2222]      Ratio  Benchmark (Parameter)
-------- -------------------- -------------------- ------  ------------------------------
+        1.00±0.01ms          2.00±0.01ms            2.00  bench_a.Z.time_w('math', 'cpu')
         3                    3                      1.00  bench_a.Z.track_ops('math', 'cpu')
"""


def test_parse_tables_reads_both_table_styles() -> None:
    rows = perf_gate.parse_tables(PIPE_TABLE + SIMPLE_TABLE)
    assert [r.mark for r in rows] == ["+", " ", "!", "-", "+", " "]
    assert rows[0].name == "bench_p.PreprocessBatch.time_preprocess('batched', 'cpu')"
    assert rows[4].name == "bench_a.Z.time_w('math', 'cpu')" and rows[4].ratio == "2.00"
    worse, broken, failing = perf_gate.summarise(rows)
    assert worse == ["bench_a.Z.time_w('math', 'cpu')",
                     "bench_p.PreprocessBatch.time_preprocess('batched', 'cpu')"]
    assert broken == failing == ["bench_a.X.time_y('sdpa', 'cpu')"]


def test_selection_regex_selects_exactly_the_flagged_benchmarks() -> None:
    import re

    flagged = ["a.B.time_c('x', 'cpu')", "a.D.track_e"]
    regex = perf_gate.selection_regex(flagged)
    # asv matches "name(params)" for parametrised benchmarks (asv.benchmarks.Benchmarks).
    assert all(re.search(regex, name) for name in flagged)
    for other in ("a.B.time_c('y', 'cpu')", "a.B.time_c", "a.D.track_ee", "xa.D.track_e"):
        assert not re.search(regex, other), other


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_resolve_base_merge_base_or_parent(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    for n in range(2):
        (repo / "f").write_text(str(n))
        _git(repo, "add", "f")
        _git(repo, "commit", "-qm", f"c{n}")
    main_head = _git(repo, "rev-parse", "HEAD")
    # On main itself the merge base is HEAD: fall back to HEAD~1.
    assert perf_gate.resolve_base(None, main_head, repo) == _git(repo, "rev-parse", "HEAD~1")
    _git(repo, "checkout", "-q", "-b", "feature")
    (repo / "f").write_text("feature")
    _git(repo, "commit", "-qam", "f1")
    head = _git(repo, "rev-parse", "HEAD")
    assert perf_gate.resolve_base(None, head, repo) == main_head
    assert perf_gate.resolve_base("HEAD~1", head, repo) == main_head
    with pytest.raises(perf_gate.GateError, match="'nope' is not a commit"):
        perf_gate.resolve_base("nope", head, repo)


def test_gate_usage_errors_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert perf_gate.main(["--config", str(tmp_path / "missing.json")]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert perf_gate.main(["--factor", "0.9", "HEAD"]) == 3
    assert "--factor must be > 1.0" in capsys.readouterr().err


def test_asv_result_units_are_json_serialisable() -> None:
    # Track results travel to asv as JSON: a counter must be a plain int, a ratio a float.
    value = ratios.counters(SMALL_ATTN.build("sdpa"), "ops")
    assert type(value) is int and json.loads(json.dumps(value)) == value
    ratio = ratios.interleaved_ratio(_sleeper(0.002, "a"), _sleeper(0.001, "b"), budget_s=0.05,
                                     min_blocks=2)
    assert isinstance(ratio, float) and math.isfinite(ratio)


def test_suite_refuses_to_benchmark_the_checkout(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    # Here `reference` is the checkout's (editable install): fine with --python=same ...
    monkeypatch.setenv("ASV_CONF_DIR", str(ROOT))
    monkeypatch.setenv("ASV_ENV_TYPE", "existing")
    asv_base.check_code_under_test()
    # ... but in a built asv environment it would mean every commit runs the working tree.
    monkeypatch.setenv("ASV_ENV_TYPE", "virtualenv")
    with pytest.raises(ImportError, match="from the checkout"):
        asv_base.check_code_under_test()
    monkeypatch.setenv("ASV_CONF_DIR", str(tmp_path))  # another project's asv run
    asv_base.check_code_under_test()


def test_quick_pass_shrinks_only_the_costly_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    training = TRAINING_CASES["clip-tiny-b32"]
    long_case = cases.LONG_CASES["joint-4096"]
    pre = cases.PREPROCESS_CASES["varied16"]
    monkeypatch.delenv(ratios.QUICK_ENV, raising=False)
    assert asv_base.quick_case(training) is training and asv_base.quick_case(long_case) is long_case
    monkeypatch.setenv(ratios.QUICK_ENV, "1")
    small = asv_base.quick_case(training)
    assert (small.batch_size, small.name, small.model) == (4, training.name, training.model)
    assert asv_base.quick_case(long_case).tokens == 1024
    assert asv_base.quick_case(long_case).window == long_case.window
    assert asv_base.quick_case(pre) is pre
    loader = LOADER_TRAINING_CASES["jpeg128-b32"]
    quick_loader = asv_base.quick_case(loader)
    assert (quick_loader.images, quick_loader.steps) == (loader.batch_size, 1)
    assert quick_loader.name != loader.name  # its own cached dataset, the full one untouched
