"""Settings of pytest-mmperf: one table, several sources, each setting checked by its rule.

Every setting is one :class:`Setting` entry in :data:`SETTINGS`. From its ``name`` (a noun) follow
the command-line option ``--mmperf-<noun>``, the ini key ``mmperf_<noun>`` and the environment
variable ``PYTEST_MMPERF_<NOUN>``. Precedence, highest first::

    marker  >  command line  >  environment  >  ini file  >  hook  >  built-in default

Markers (``mmperf_devices``, ``mmperf_seed``, ``mmperf_scale``, ``mmperf_batch``) act per test
and are read by the plugin's fixtures; the only hook with a setting's default is
``pytest_mmperf_default_device``. An empty environment variable or ini value counts as unset.

The rules (what a setting accepts) live in :mod:`pytest_mmperf.settings`, shared with
``GuardSettings`` and the report API. A bad value ends the run as a pytest usage error (exit code
4) whose message names the value, where it came from (``--mmperf-seed``, ``environment variable
PYTEST_MMPERF_SEED``, ``ini file /repo/pyproject.toml key mmperf_seed``) and what is accepted.

This module imports pytest but never torch: it runs in every pytest session where the package is
installed, including ``pytest --help``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from pytest_mmperf import settings as rules
from pytest_mmperf.constants import (
    BENCHMARK_BUDGET_S,
    BENCHMARK_PROCESSES,
    DEFAULT_BUDGET_S,
    DEFAULT_CONFIDENCE,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_PROCESSES,
    DEFAULT_SNAPSHOTS,
    INCONCLUSIVE_POLICIES,
)

# --------------------------------------------------------------------------- parsers
# Each parser takes the text as written and returns the typed value, or raises ValueError with a
# short reason; the caller adds the source and the setting's `accepted` text. The rules behind
# them (pytest_mmperf.settings) are the ones GuardSettings, CompareSettings and the report API
# check their fields with.
parse_bool = rules.BOOL.parse
parse_seed = rules.SEED.parse
parse_processes = rules.PROCESSES.parse
parse_budget = rules.BUDGET_S.parse
parse_threads = rules.THREADS.parse
parse_tolerance = rules.TOLERANCE.parse
parse_confidence = rules.CONFIDENCE.parse
parse_scale = rules.SCALE.parse
parse_inconclusive = rules.INCONCLUSIVE.parse
parse_isolation = rules.ISOLATION.parse
parse_path = rules.PATH.parse
parse_device = rules.parse_device
parse_device_list = rules.parse_device_list
parse_revision = rules.parse_revision


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Setting:
    """One setting: its noun, help text, parser, what it accepts and its default.

    flag: the command line takes no value (``store_true``); ini and env values are booleans.
    cli: the option string when it does not follow ``--mmperf-<noun>`` (only ``--benchmark``).
    ini/env: whether an ini key / environment variable exists for it.
    benchmark_default: the default under ``--benchmark`` when no source sets the value.
    """

    name: str
    help: str
    parse: Callable[[str], Any]
    accepted: str
    default: Any = None
    flag: bool = False
    cli: str | None = None
    ini: bool = True
    env: bool = True
    benchmark_default: Any = None
    metavar: str | None = None

    @property
    def option(self) -> str:
        return self.cli or "--mmperf-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    @property
    def ini_key(self) -> str:
        return "mmperf_" + self.name

    @property
    def env_var(self) -> str:
        return "PYTEST_MMPERF_" + self.name.upper()


_DEVICE_ACCEPTED = rules.DEVICES_ACCEPTED
_BOOL_ACCEPTED = rules.BOOL.accepted

SETTINGS: tuple[Setting, ...] = (
    Setting("device", "devices for the mmperf_device fixture; 'auto' = the "
            "pytest_mmperf_default_device hook, else the best accelerator, else cpu "
            "(default: auto)", parse_device_list, _DEVICE_ACCEPTED, ("auto",), metavar="DEVICES"),
    Setting("require_device", "fail, instead of skip, tests whose requested device is not "
            "available", parse_bool, _BOOL_ACCEPTED, False, flag=True),
    Setting("seed", "base seed of the synthetic data; each test derives its own seed from it "
            "and its test id (default: 0)", parse_seed, rules.SEED.accepted, 0, metavar="N"),
    Setting("scale", "size of the default synthetic batches and features: smoke | default | "
            "full (default: default)", parse_scale, rules.SCALE.accepted, "default",
            metavar="SCALE"),
    Setting("budget", "measuring time in seconds per timing guard per process (default: "
            f"{DEFAULT_BUDGET_S:g}; {BENCHMARK_BUDGET_S:g} under --benchmark)", parse_budget,
            rules.BUDGET_S.accepted, DEFAULT_BUDGET_S, benchmark_default=BENCHMARK_BUDGET_S,
            metavar="SECONDS"),
    Setting("processes", "processes whose samples a timing guard pools (default: "
            f"{DEFAULT_PROCESSES}; {BENCHMARK_PROCESSES} under --benchmark)", parse_processes,
            rules.PROCESSES.accepted, DEFAULT_PROCESSES, benchmark_default=BENCHMARK_PROCESSES,
            metavar="N"),
    Setting("confidence", "confidence level of the timing guards' intervals (default: "
            f"{DEFAULT_CONFIDENCE:g})", parse_confidence, rules.CONFIDENCE.accepted,
            DEFAULT_CONFIDENCE, metavar="LEVEL"),
    Setting("inconclusive", "what a timing guard does when its interval still straddles the "
            f"threshold: {' | '.join(INCONCLUSIVE_POLICIES)} (default: {DEFAULT_INCONCLUSIVE})",
            parse_inconclusive, rules.INCONCLUSIVE.accepted, DEFAULT_INCONCLUSIVE,
            metavar="POLICY"),
    Setting("threads", "intra-op threads while timing guards and report families measure: auto "
            "(the cores other processes leave free, at most torch's own count; under "
            "contention the guard measures what the free cores can) or a number (default: "
            "auto)", parse_threads, rules.THREADS.accepted, "auto", metavar="N"),
    Setting("baseline", "compare every benchmark of the run (the benchmark fixture, report "
            "families) with this git revision (origin/main, a tag, HEAD~1): its code from a "
            "temporary copy, the tests from the working tree, both measured in lockstep",
            parse_revision, rules.REVISION_ACCEPTED, None, metavar="REV"),
    Setting("baseline_tolerance", "slowdown against --mmperf-baseline tolerated before a test "
            "fails, as a fraction of REV's time (default: 0.10)", parse_tolerance,
            rules.TOLERANCE.accepted, 0.10, metavar="FRACTION"),
    Setting("isolation", "how timing guards start their worker processes: fork (from a server "
            "that imported pytest and torch once per session; the default where os.fork "
            "exists) | spawn (a fresh interpreter per worker)", parse_isolation,
            rules.ISOLATION.accepted, "fork", metavar="MODE"),
    Setting("json", "write the run's guard results and machine info as JSON to this path",
            parse_path, rules.PATH.accepted, None, metavar="PATH"),
    Setting("html", "write an HTML report of the run to this path", parse_path, rules.PATH.accepted,
            None, metavar="PATH"),
    Setting("snapshots", f"the snapshot JSON file (default: {DEFAULT_SNAPSHOTS} in the rootdir)",
            parse_path, rules.PATH.accepted, None, metavar="PATH"),
    # Command line only: an ini key or env var left on would rewrite snapshots in every run.
    Setting("update_snapshots", "rewrite the snapshot file with this run's counters",
            parse_bool, _BOOL_ACCEPTED, False, flag=True, ini=False, env=False),
    Setting("benchmark", "the performance run: select tests using the benchmark fixture or "
            "timing guards, enable pytest-benchmark timing (overrides --benchmark-disable) and "
            "raise the guards' budgets", parse_bool, _BOOL_ACCEPTED, False, flag=True,
            cli="--benchmark", ini=False, env=False),
)
SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class MmperfSettings:
    """The resolved settings of a run (stored in ``config.stash[SETTINGS_KEY]``).

    device may still contain ``"auto"``: resolving it needs torch, so the plugin does it only
    when a test uses ``mmperf_device``. Paths are absolute. sources maps each setting name to
    where its value came from (missing = built-in default).
    """

    device: tuple[str, ...] = ("auto",)
    require_device: bool = False
    seed: int = 0
    scale: str = "default"
    budget: float = DEFAULT_BUDGET_S
    processes: int = DEFAULT_PROCESSES
    confidence: float = DEFAULT_CONFIDENCE
    inconclusive: str = DEFAULT_INCONCLUSIVE
    threads: int | str = "auto"
    baseline: str | None = None
    baseline_tolerance: float = 0.10
    isolation: str = "fork"
    json: Path | None = None
    html: Path | None = None
    snapshots: Path | None = None
    update_snapshots: bool = False
    benchmark: bool = False
    sources: tuple[tuple[str, str], ...] = ()

    def source(self, name: str) -> str:
        """Where setting `name` came from: an option, env var, ini key, hook or "default"."""
        return dict(self.sources).get(name, "default")

    def replay_args(self) -> list[str]:
        """Command-line options that reproduce this run's synthetic data and devices."""
        return [f"--mmperf-seed={self.seed}", f"--mmperf-scale={self.scale}",
                f"--mmperf-device={','.join(self.device)}"]


SETTINGS_KEY = pytest.StashKey[MmperfSettings]()


def invalid(setting: Setting, raw: object, source: str, reason: str) -> pytest.UsageError:
    """The usage error for a bad value: value, source, reason and what is accepted."""
    return pytest.UsageError(
        f"pytest-mmperf: invalid {setting.name} {raw!r} from {source}: {reason}. "
        f"Accepted: {setting.accepted}."
    )


# --------------------------------------------------------------------------- registration
def add_options(parser: pytest.Parser) -> None:
    """Register every setting's option and ini key (called from ``pytest_addoption``)."""
    group = parser.getgroup("mmperf", "multimodal performance (pytest-mmperf)")
    for s in SETTINGS:
        env = f" [env {s.env_var}]" if s.env else ""
        if s.flag:
            group.addoption(s.option, action="store_true", dest=s.dest, default=None,
                            help=s.help + env)
        else:
            group.addoption(s.option, action="store", dest=s.dest, default=None,
                            metavar=s.metavar, help=s.help + env)
        if s.ini:
            parser.addini(s.ini_key, s.help + f" ({s.accepted})", type="string", default=None)


# --------------------------------------------------------------------------- resolution
def _ini_source(config: pytest.Config, key: str) -> str:
    overrides = getattr(config.option, "override_ini", None) or []
    if any(str(item).split("=", 1)[0].strip() == key for item in overrides):
        return f"-o/--override-ini {key}"
    return f"ini file {config.inipath} key {key}" if config.inipath else f"ini key {key}"


def _raw(setting: Setting, config: pytest.Config, environ: Mapping[str, str]
         ) -> tuple[Any, str, Path] | None:
    """(raw value, source, base dir for relative paths) of the highest source that sets it."""
    cli = config.getoption(setting.dest, None)
    if cli is not None:
        return cli, setting.option, config.invocation_params.dir
    if setting.env and environ.get(setting.env_var, "").strip():
        return environ[setting.env_var], f"environment variable {setting.env_var}", \
            config.invocation_params.dir
    if setting.ini:
        source = _ini_source(config, setting.ini_key)
        try:
            value = config.getini(setting.ini_key)
        except pytest.UsageError as exc:  # pytest's own type check (native TOML tables)
            raise pytest.UsageError(f"pytest-mmperf: {exc} (write it as a string). "
                                    f"Accepted: {setting.accepted}.") from None
        # pytest < 8 gives [] for an unset key even with default=None (pytest#11282).
        if value is not None and value != [] and str(value).strip():
            base = config.inipath.parent if config.inipath else config.rootpath
            return value, source, base
    return None


def resolve_settings(config: pytest.Config, environ: Mapping[str, str] | None = None
                     ) -> MmperfSettings:
    """Resolve every setting from CLI > env > ini > hook > default; UsageError on bad values."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    benchmark = bool(config.getoption("benchmark", None))
    for s in SETTINGS:
        found = _raw(s, config, environ)
        if found is None:
            values[s.name] = s.benchmark_default if benchmark and s.benchmark_default is not None \
                else s.default
            continue
        raw, source, base = found
        if s.flag and raw is True:  # store_true on the command line
            value: Any = True
        else:
            try:
                value = s.parse(str(raw))
            except ValueError as exc:
                raise invalid(s, raw, source, str(exc)) from None
        if isinstance(value, Path) and not value.is_absolute():
            value = base / value
        values[s.name], sources[s.name] = value, source
    if "auto" in values["device"]:
        values["device"], hook_source = _hook_device(config, values["device"])
        if hook_source:
            sources["device"] = hook_source
    if values["snapshots"] is None:
        values["snapshots"] = config.rootpath / DEFAULT_SNAPSHOTS
    return MmperfSettings(**values, sources=tuple(sorted(sources.items())))


def _hook_device(config: pytest.Config, devices: tuple[str, ...]
                 ) -> tuple[tuple[str, ...], str | None]:
    """Replace ``auto`` with the ``pytest_mmperf_default_device`` hook's answer, if any."""
    hook = getattr(config.hook, "pytest_mmperf_default_device", None)
    answer = hook(config=config) if hook is not None else None
    if answer is None:
        return devices, None
    source = "hook pytest_mmperf_default_device"
    setting = SETTINGS_BY_NAME["device"]
    if isinstance(answer, (list, tuple)):
        text = ",".join(map(str, answer))
    else:
        text = str(answer)  # a str or a torch.device
    try:
        chosen = parse_device_list(text)
    except ValueError as exc:
        raise invalid(setting, answer, source, str(exc)) from None
    merged: list[str] = []
    for device in devices:
        for item in chosen if device == "auto" else (device,):
            if item not in merged:
                merged.append(item)
    return tuple(merged), source


def get_settings(config: pytest.Config) -> MmperfSettings:
    """The run's settings; resolved (and stored) on first use if pytest_configure has not."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        settings = config.stash[SETTINGS_KEY] = resolve_settings(config)
    return settings


# --------------------------------------------------------------------------- markers
def marker_kwargs(node: pytest.Item, name: str) -> dict[str, Any]:
    """Keyword arguments of every ``name`` marker on node, the closest marker winning.

    Positional arguments are an error (ValueError naming the marker and the arguments).
    """
    merged: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers(name))):  # module, class, then function
        if mark.args:
            raise ValueError(f"@pytest.mark.{name} takes keyword arguments only, "
                             f"got positional {mark.args!r}")
        merged.update(mark.kwargs)
    return merged


def marker_setting(node: pytest.Item, name: str) -> Any:
    """The value of marker ``mmperf_<name>(value)`` (seed or scale) on node, or None."""
    mark = node.get_closest_marker("mmperf_" + name)
    if mark is None:
        return None
    setting = SETTINGS_BY_NAME[name]
    if len(mark.args) != 1 or mark.kwargs:
        raise ValueError(f"@pytest.mark.mmperf_{name} takes one value, got args={mark.args!r} "
                         f"kwargs={mark.kwargs!r}; accepted: {setting.accepted}")
    raw = mark.args[0]
    if isinstance(raw, bool) or (name == "seed" and not isinstance(raw, (int, str))):
        raise ValueError(f"@pytest.mark.mmperf_{name}({raw!r}): accepted: {setting.accepted}")
    try:
        return setting.parse(str(raw))
    except ValueError as exc:
        raise ValueError(f"@pytest.mark.mmperf_{name}({raw!r}): {exc}; "
                         f"accepted: {setting.accepted}") from None


def marker_device_kinds(node: pytest.Item) -> tuple[str, ...] | None:
    """The kinds/devices allowed by ``mmperf_devices(*kinds)`` on node, None without marker.

    Each entry is a kind (``"cuda"`` matches every ``cuda:N``) or an exact device (``"cuda:1"``).
    """
    mark = node.get_closest_marker("mmperf_devices")
    if mark is None:
        return None
    accepted = "device kinds cpu, cuda, mps, xpu or devices such as cuda:1"
    if not mark.args or mark.kwargs:
        raise ValueError(f"@pytest.mark.mmperf_devices needs one or more positional kinds, got "
                         f"args={mark.args!r} kwargs={mark.kwargs!r}; accepted: {accepted}")
    kinds = []
    for arg in mark.args:
        text = str(arg).strip().lower() if isinstance(arg, str) else ""
        if not rules.DEVICE_RE.fullmatch(text):
            raise ValueError(f"@pytest.mark.mmperf_devices: {arg!r} is not a device kind; "
                             f"accepted: {accepted}")
        kinds.append(text)
    return tuple(kinds)


def parametrizes(node: Any, name: str) -> bool:
    """Whether the test parametrises argument `name` itself (then the plugin leaves it alone)."""
    for mark in node.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        names = names.split(",") if isinstance(names, str) else names
        if name in (n.strip() for n in names):
            return True
    return False


def device_allowed(device: str, kinds: Iterable[str]) -> bool:
    """Whether a concrete device (``"cuda:0"``) matches one of the marker's kinds/devices."""
    kind = device.split(":", 1)[0]
    return any(k == device or k == kind for k in kinds)


def derive_seed(base: int, key: str) -> int:
    """A stable 32-bit seed from the base seed and a test key (sha256, never ``hash()``,
    which is salted per process)."""
    digest = hashlib.sha256(f"{base}\0{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def settings_as_dict(settings: MmperfSettings) -> dict[str, Any]:
    """JSON-ready settings (paths as strings), for reports."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == "sources":
            value = dict(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out
