"""The chassis' public surface: the export list stays honest."""

from __future__ import annotations

import inspect

import chassis


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(chassis) if not name.startswith("_")}
    # submodules imported as a side effect of the package's own imports are not API
    modules = {name for name in public if inspect.ismodule(getattr(chassis, name))}
    assert set(chassis.__all__) == public - modules
    assert len(chassis.__all__) == len(set(chassis.__all__))
