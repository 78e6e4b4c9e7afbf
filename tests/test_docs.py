"""Every Python example in README.md and docs/ runs as written (offline, with a tiny random model).

The tiny model is placed in a private Hugging Face cache under the default hub id, so examples
that call ``ncs.load_model()`` exercise the real offline loading path.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import fake_hub_cache
from napari_clipseg.constants import DEFAULT_HUB_ID

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _examples():
    for page in PAGES:
        for i, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8"))):
            yield pytest.param(page, code, id=f"{page.relative_to(ROOT)}#{i + 1}")


EXAMPLES = list(_examples())


def test_the_docs_have_python_examples():
    pages = {page.name for page, _ in (p.values for p in EXAMPLES)}
    assert {"README.md", "large-images.md", "visual-prompts.md", "records.md"} <= pages


@pytest.mark.parametrize(("page", "code"), EXAMPLES)
def test_example_runs(page, code, tiny_model_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    fake_hub_cache(cache, DEFAULT_HUB_ID, {f.name: f for f in Path(tiny_model_dir).iterdir()})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    exec(compile(code, str(page), "exec"), {"__name__": "__docs_example__"})


def test_readme_links_work_on_the_package_index_and_the_napari_hub():
    """README.md is the long description there: relative links and pictures would break."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    relative = [t for t in re.findall(r"\]\(([^)]+)\)", readme) if not t.startswith(("https://", "http://", "#"))]
    assert relative == []
    prefix = r"^https://(github\.com/napari-clipseg/napari-clipseg/blob|raw\.githubusercontent\.com/napari-clipseg/napari-clipseg)/main/"
    ours = [t for t in re.findall(r"\]\((https://[^)#]+)", readme) if re.match(prefix, t)]
    assert ours and all((ROOT / re.sub(prefix, "", t)).exists() for t in ours), ours
