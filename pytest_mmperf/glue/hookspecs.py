"""Hook specifications of pytest-mmperf (``pytest_mmperf_<verb>_<noun>``).

Implement them in a ``conftest.py`` or a plugin; pytest registers them through
``pytest_addhooks`` in :mod:`pytest_mmperf.plugin`. Neither hook needs torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # only for annotations: importing synthetic imports torch
    from pytest_mmperf.data.synthetic import BatchSpec


@pytest.hookspec(firstresult=True)
def pytest_mmperf_default_device(config: pytest.Config) -> Any:
    """The repository's default device(s), used where the device setting is ``auto``.

    Consulted only when neither ``--mmperf-device``, ``PYTEST_MMPERF_DEVICE`` nor the
    ``mmperf_device`` ini key chose something other than ``auto`` (precedence: marker > CLI >
    env > ini > **hook** > default). Return a device string as ``--mmperf-device`` accepts it
    (``"cpu"``, ``"cuda:1"``, ``"cpu,cuda:0"``, or ``"auto"``), a list of such strings, a
    ``torch.device``, or None to let the next implementation (and finally the built-in choice:
    best accelerator, else cpu) decide. The first non-None answer wins. An invalid answer ends
    the run as a usage error naming this hook. Called once, in ``pytest_configure``, so define it
    in the rootdir ``conftest.py`` or a plugin.

    Example ``conftest.py``: keep a CI job that has a small GPU on the CPU by default::

        import os

        def pytest_mmperf_default_device(config):
            return "cpu" if os.environ.get("CI") else None
    """


@pytest.hookspec
def pytest_mmperf_modify_batch_spec(config: pytest.Config, spec: BatchSpec) -> BatchSpec | None:
    """Adjust the :class:`~pytest_mmperf.data.synthetic.BatchSpec` behind ``mmperf_batch``.

    Receives the active scale's default spec (``spec`` is frozen; return ``spec.replace(...)``)
    or None to keep it. Implementations are chained: each gets the spec the previous one
    returned, plugins and outer conftests first, the ``conftest.py`` nearest the test last, so the
    nearest has the final word. Only conftests on the test's path take part; hook wrappers of
    other plugins do not. The marker
    ``@pytest.mark.mmperf_batch(**spec)`` is applied after all hooks (marker > hook). Also used
    by ``mmperf_batch_factory`` and ``mmperf_jpeg_dataset``.

    Example ``conftest.py``: this repository's model takes 224 x 224 uint8 tensors::

        def pytest_mmperf_modify_batch_spec(config, spec):
            return spec.replace(image_size=(224, 224), image_format="uint8")
    """
