"""Data fixtures: mmperf_seed, mmperf_batch(_spec/_factory), mmperf_features, mmperf_jpeg_dataset,
their markers (precedence marker > CLI, errors at collection) and pytest_mmperf_modify_batch_spec.
Sizes are tiny (smoke scale, 32 px images) to keep these runs quick."""

from __future__ import annotations

import re

import pytest

SMALL = "--mmperf-scale=smoke"


def _values(result: pytest.RunResult, tag: str, path: bool = False) -> dict[str, str]:
    """``{test id: value}`` from lines ``<nodeid> <tag> <value>`` printed with -v -s; the id
    keeps the file part of the node id only when `path` is true."""
    found = (re.search(rf"(\S+?)::(\S+) {tag} (.*)$", line) for line in result.outlines)
    return {(f"{m[1]}::{m[2]}" if path else m[2]): m[3] for m in found if m}


# --------------------------------------------------------------------------- seeds
SEED_TESTS = """
import pytest

def test_a(mmperf_seed):
    print("SEED", mmperf_seed)

def test_b(mmperf_seed):
    print("SEED", mmperf_seed)

@pytest.mark.mmperf_seed(1234)
def test_pinned(mmperf_seed):
    print("SEED", mmperf_seed)

def test_dev(mmperf_device, mmperf_seed):
    print("SEED", mmperf_seed)
"""


def test_seed_is_stable_per_test_and_follows_the_base_seed(
    pytester: pytest.Pytester, fake_cuda
) -> None:
    fake_cuda(1)
    pytester.makepyfile(SEED_TESTS)
    first = _values(pytester.runpytest("-v", "-s", "--mmperf-device=cpu,cuda:0"), "SEED")
    again = _values(pytester.runpytest("-v", "-s", "--mmperf-device=cpu,cuda:0"), "SEED")
    other = _values(pytester.runpytest("-v", "-s", "--mmperf-seed=1",
                                       "--mmperf-device=cpu,cuda:0"), "SEED")
    assert set(first) == {"test_a", "test_b", "test_pinned", "test_dev[cpu]", "test_dev[cuda:0]"}
    assert first == again  # stable across runs
    assert first["test_a"] != first["test_b"]  # derived from the test id
    assert first["test_dev[cpu]"] == first["test_dev[cuda:0]"]  # same data on every device
    assert first["test_pinned"] == other["test_pinned"] == "1234"  # marker > CLI
    assert all(other[k] != first[k] for k in first if k != "test_pinned")
    assert all(0 <= int(v) < 2**32 for v in first.values())


# --------------------------------------------------------------------------- specs
def test_scale_cli_and_marker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("""
        import pytest

        def test_spec(mmperf_batch_spec, mmperf_feature_spec):
            print("SPEC", mmperf_batch_spec.batch_size, mmperf_feature_spec.image_tokens)

        @pytest.mark.mmperf_scale("smoke")
        def test_marked(mmperf_batch_spec, mmperf_feature_spec):
            print("SPEC", mmperf_batch_spec.batch_size, mmperf_feature_spec.image_tokens)
    """)
    assert _values(pytester.runpytest("-v", "-s"), "SPEC") == {
        "test_spec": "8 577", "test_marked": "4 50"}
    monkeypatch.setenv("PYTEST_MMPERF_SCALE", "smoke")
    assert _values(pytester.runpytest("-v", "-s", "--mmperf-scale=full"), "SPEC") == {
        "test_spec": "32 577", "test_marked": "4 50"}


def test_batch_markers_merge_closest_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        pytestmark = pytest.mark.mmperf_batch(batch_size=3, context_length=16)

        @pytest.mark.mmperf_batch(batch_size=2, image_format="uint8")
        class TestX:
            @pytest.mark.mmperf_batch(batch_size=1)
            def test_spec(self, mmperf_batch_spec):
                s = mmperf_batch_spec
                print("SPEC", s.batch_size, s.context_length, s.image_format, s.max_side)
    """)
    result = pytester.runpytest("-v", "-s", SMALL)
    assert _values(result, "SPEC") == {"TestX::test_spec": "1 16 uint8 256"}


HOOKS_ROOT = """
def pytest_mmperf_modify_batch_spec(config, spec):
    return spec.replace(batch_size=5, context_length=8)
"""
HOOKS_SUB = """
def pytest_mmperf_modify_batch_spec(config, spec):
    assert spec.batch_size == 5  # chained: sees the outer conftest's result
    return spec.replace(image_format="float")
"""
HOOKED_TEST = """
import pytest

def test_spec(mmperf_batch_spec):
    s = mmperf_batch_spec
    print("SPEC", s.batch_size, s.context_length, s.image_format)

@pytest.mark.mmperf_batch(batch_size=2)
def test_marked(mmperf_batch_spec):
    s = mmperf_batch_spec
    print("SPEC", s.batch_size, s.context_length, s.image_format)
"""


def test_modify_batch_spec_hooks_chain_and_marker_wins(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOKS_ROOT)
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(HOOKS_SUB)
    (sub / "test_sub.py").write_text(HOOKED_TEST)
    pytester.makepyfile(test_top=HOOKED_TEST)
    result = pytester.runpytest("-v", "-s", SMALL)
    result.assert_outcomes(passed=4)
    assert _values(result, "SPEC", path=True) == {
        "test_top.py::test_spec": "5 8 pil",  # only the root conftest applies here
        "test_top.py::test_marked": "2 8 pil",
        "sub/test_sub.py::test_spec": "5 8 float",  # root, then the nearer conftest
        "sub/test_sub.py::test_marked": "2 8 float",  # marker > hook
    }


CHAIN_PLUGIN = """
def pytest_mmperf_modify_batch_spec(config, spec):
    return spec.replace(context_length=20)  # a plugin is the first link
"""
WRAPPER_PLUGIN = """
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_mmperf_modify_batch_spec(config, spec):
    raise AssertionError("a hook wrapper is not a link of the chain")
    yield
"""
CHAIN_ROOT = """
def pytest_mmperf_modify_batch_spec(config, spec):
    assert spec.context_length == 20  # after the plugin
    return spec.replace(context_length=21)
"""
CHAIN_SUB = """
def pytest_mmperf_modify_batch_spec(spec):  # a subset of the arguments, as pluggy allows
    assert spec.context_length == 21  # after the root conftest: the nearest is last
    return None  # keep it
"""
CHAIN_TEST = """
def test_spec(mmperf_batch_spec):
    print("SPEC", mmperf_batch_spec.context_length)
"""


def test_modify_batch_spec_chain_order_plugin_outer_then_nearest(
        pytester: pytest.Pytester) -> None:
    """The chain's order (pluggy's listing of the implementations) is pinned here: this fails
    if a pluggy or pytest release changes it."""
    pytester.makepyfile(chainplugin=CHAIN_PLUGIN, wrapperplugin=WRAPPER_PLUGIN)
    pytester.syspathinsert()
    pytester.makeconftest(CHAIN_ROOT)
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(CHAIN_SUB)
    (sub / "test_chain.py").write_text(CHAIN_TEST)
    result = pytester.runpytest("-p", "chainplugin", "-p", "wrapperplugin", "-v", "-s", SMALL)
    result.assert_outcomes(passed=1)
    assert _values(result, "SPEC") == {"test_spec": "21"}


def test_modify_batch_spec_bad_return_fails_collection(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_mmperf_modify_batch_spec(config, spec):\n"
                          "    return {'batch_size': 2}\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.mmperf_batch(batch_size=1)
        def test_x(mmperf_batch):
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*pytest_mmperf_modify_batch_spec in *conftest.py returned "
                                 "{'batch_size': 2}; expected a BatchSpec*"])


# --------------------------------------------------------------------------- marker errors
@pytest.mark.parametrize(
    ("marker", "fixture", "message"),
    [
        ("mmperf_batch(banana=1)", "mmperf_batch", "*mmperf_batch(banana=1)*unknown field*"
         "'banana'*valid fields: batch_size*"),
        ("mmperf_batch(batch_size=0)", "mmperf_batch", "*mmperf_batch(batch_size=0)*"
         "batch_size*0*"),
        ("mmperf_batch(2)", "mmperf_batch", "*mmperf_batch takes keyword arguments only*(2,)*"),
        ("mmperf_features(dtype='int8')", "mmperf_features", "*mmperf_features(dtype='int8')*"
         "int8*"),
        ("mmperf_features(depth=3)", "mmperf_features", "*unknown field*'depth'*valid fields*"),
        ("mmperf_seed('x')", "mmperf_seed", "*mmperf_seed('x')*not an integer*accepted: an "
         "integer >= 0*"),
        ("mmperf_scale('huge')", "mmperf_batch", "*mmperf_scale('huge')*accepted: one of "
         "smoke, default, full*"),
    ],
)
def test_bad_markers_fail_at_collection(
    pytester: pytest.Pytester, marker: str, fixture: str, message: str
) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.{marker}
        def test_x({fixture}):
            raise AssertionError("must not run")
    """)
    result = pytester.runpytest("--mmperf-device=cpu", "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting*", "*test_x: " + message])


def test_strict_markers_accept_every_mmperf_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.mmperf_batch(batch_size=1, image_size=(8, 8))
        @pytest.mark.mmperf_features(batch_size=1, image_tokens=4, text_tokens=3, dim=8, heads=2)
        @pytest.mark.mmperf_devices("cpu")
        @pytest.mark.mmperf_seed(3)
        @pytest.mark.mmperf_scale("smoke")
        @pytest.mark.mmperf_timing
        def test_x(mmperf_batch_spec, mmperf_feature_spec):
            pass
    """)
    pytester.runpytest("--strict-markers", "--mmperf-device=cpu").assert_outcomes(passed=1)


# --------------------------------------------------------------------------- data
def test_batch_factory_and_features_contents(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        import torch
        from pytest_mmperf.data.synthetic import make_batch

        @pytest.mark.mmperf_batch(batch_size=2, image_size=(32, 40), image_format="uint8",
                                  context_length=12)
        def test_batch(mmperf_batch, mmperf_batch_spec, mmperf_seed):
            assert len(mmperf_batch) == 2 and mmperf_batch.seed == mmperf_seed
            assert [tuple(i.shape) for i in mmperf_batch.images] == [(3, 32, 40)] * 2
            assert mmperf_batch.images[0].dtype == torch.uint8
            assert tuple(mmperf_batch.input_ids.shape) == (2, 12)
            again = make_batch(mmperf_batch_spec, seed=mmperf_seed)
            assert torch.equal(again.images[1], mmperf_batch.images[1])

        @pytest.mark.mmperf_batch(batch_size=1, image_size=(16, 16))
        def test_factory(mmperf_batch_factory, mmperf_seed):
            three = mmperf_batch_factory(batch_size=3, image_format="float")
            assert len(three) == 3 and three.images[0].dtype == torch.float32
            assert three.seed == mmperf_seed and mmperf_batch_factory(seed=5).seed == 5
            assert len(mmperf_batch_factory()) == 1

        @pytest.mark.mmperf_features(dtype="bfloat16", dim=16, heads=2)
        def test_features(mmperf_features, mmperf_device):
            f = mmperf_features
            assert tuple(f.image_tokens.shape) == (2, 50, 16)   # smoke: B=2, 50 image tokens
            assert tuple(f.text_tokens.shape) == (2, 16, 16)    # 16 text tokens
            assert f.image_tokens.dtype == torch.bfloat16
            assert f.text_padding_mask.dtype == torch.bool
            assert f.image_tokens.device == mmperf_device
    """)
    result = pytester.runpytest(SMALL, "--mmperf-device=cpu")
    result.assert_outcomes(passed=3)


def test_jpeg_dataset_is_written_once_per_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        SMALL = pytest.mark.mmperf_batch(batch_size=2, image_size=(24, 24))

        @SMALL
        def test_a(mmperf_jpeg_dataset):
            d = mmperf_jpeg_dataset
            assert len(d.paths) == 2 and all(p.read_bytes()[:2] == b"\\xff\\xd8" for p in d.paths)
            assert d.captions_file.read_text().count("\\n") == 2
            print("ROOT", d.root, d.paths[0].stat().st_mtime_ns)

        @SMALL
        def test_b(mmperf_jpeg_dataset):
            print("ROOT", mmperf_jpeg_dataset.root, mmperf_jpeg_dataset.paths[0].stat().st_mtime_ns)

        @pytest.mark.mmperf_batch(batch_size=3, image_size=(24, 24))
        def test_c(mmperf_jpeg_dataset):
            assert len(mmperf_jpeg_dataset.paths) == 3
            print("ROOT", mmperf_jpeg_dataset.root, 0)
    """)
    result = pytester.runpytest("-v", "-s", SMALL)
    result.assert_outcomes(passed=3)
    roots = _values(result, "ROOT")
    assert roots["test_a"] == roots["test_b"]  # same spec: same files, not rewritten
    assert roots["test_c"].split()[0] != roots["test_a"].split()[0]


def test_batch_is_generated_once_per_spec_and_each_test_gets_its_own_copy(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest_mmperf.data.synthetic as syn

        CALLS = []
        _make = syn.make_batch

        def counting(*args, **kwargs):
            CALLS.append(1)
            return _make(*args, **kwargs)

        syn.make_batch = counting
    """)
    pytester.makepyfile("""
        import numpy as np
        import pytest
        from conftest import CALLS
        from pytest_mmperf.data.synthetic import make_batch

        SPEC = pytest.mark.mmperf_batch(batch_size=2, image_size=(24, 24))

        @SPEC
        @pytest.mark.mmperf_seed(7)
        @pytest.mark.parametrize("run", range(3))
        def test_same(mmperf_batch, run):
            fresh = make_batch(mmperf_batch.spec, seed=7)
            assert all(np.array_equal(np.asarray(a), np.asarray(b))
                       for a, b in zip(mmperf_batch.images, fresh.images))
            assert mmperf_batch.input_ids.equal(fresh.input_ids)
            assert mmperf_batch.captions == fresh.captions
            mmperf_batch.images[0].paste((0, 0, 0), (0, 0, 24, 24))  # changes this copy only
            mmperf_batch.input_ids.zero_()
            mmperf_batch.captions.clear()
            print("CALLS", len(CALLS))  # make_batch calls so far: the fixture's and ours

        @pytest.mark.mmperf_batch(batch_size=3, image_size=(24, 24))
        @pytest.mark.mmperf_seed(7)
        def test_other_spec(mmperf_batch):
            assert len(mmperf_batch.images) == 3
    """)
    result = pytester.runpytest("-v", "-s", SMALL, "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    calls = _values(result, "CALLS")
    # one call of the fixture for the three tests, plus each test's own
    assert calls == {"test_same[0]": "2", "test_same[1]": "3", "test_same[2]": "4"}, calls
