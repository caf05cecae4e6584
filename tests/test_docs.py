"""Docs move with the code: every hook spec is documented, examples validate."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from dnas_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOK_NAMES = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("dnas_"))


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_hook_spec_has_docstring_and_docs_entry(hook):
    fn = getattr(hookspecs, hook)
    assert fn.__doc__ and len(fn.__doc__.strip()) > 40, f"{hook} needs a docstring"
    docs = (ROOT / "docs" / "hooks.md").read_text()
    assert f"`{hook}`" in docs, f"docs/hooks.md has no entry for {hook}"


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    head = text[: text.find("\n## ")]
    assert "dnas run examples/quickstart.yaml" in head and "pytest" in head


@pytest.mark.parametrize("manifest", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_manifests_validate(pm, manifest):
    from dnas_core.manifest import load_manifest

    load_manifest(manifest, pm.registries)
