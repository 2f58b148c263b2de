"""Reference implementations guarded by the pytest-mmperf suite.

``reference.preprocess``: the seed article's image preprocessing (naive loop, the seed's own
"optimised" DataLoader, and the corrected fast versions). ``reference.attention``: the seed's
cross-modal attention and the corrected / fused / sparse variants. ``reference.training``: a
small image-text model and its mixed-precision training step.

Nothing is imported here, so ``import reference`` stays cheap; import the submodules directly.
This package depends on torch, torchvision, Pillow and numpy only (never pytest or pytest_mmperf).
"""
