"""Deliberately broken implementations: gentwin.fast with one thing broken in each module, to show that
`gentwin check` catches every one of them (tests/test_conformance_broken.py):

    gentwin check --impl tests.broken_impls.top_k_off_by_one

A module defines only what it breaks; every other name of the API comes from gentwin.fast through the
module-level __getattr__ it imports from here (`base_attribute`).
"""

from __future__ import annotations

import importlib

BASE = importlib.import_module("gentwin.fast")


def base_attribute(name: str):
    """What a broken module does not define, it takes from BASE (a module-level __getattr__, PEP 562)."""
    return getattr(BASE, name)


def with_changed_options(change):
    """A Generator class that runs with the search options change(options) returns in place of the caller's;
    options are as get_search_options gives them (numbers as floats)."""

    class Generator(BASE.Generator):
        def __init__(self, model, params):
            options = params.get_search_options()
            changed = BASE.GeneratorParams(model)
            changed.set_search_options(**{**options, **change(options)})
            super().__init__(model, changed)

    return Generator
