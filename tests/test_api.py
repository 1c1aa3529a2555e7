"""The top-level API: ``import skill_lens as sl`` (README, "One import")."""

import importlib
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import skill_lens as sl

ROOT = Path(__file__).resolve().parents[1]


def _readme_names() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## One import\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## One import' section followed by another section"
    body = section.group(1)
    body = body[body.index("\n- "):]  # the bulleted list of names, not the example or the prose before it
    return re.findall(r"`sl\.(\w+)`", body)


def test_the_readme_lists_exactly_the_top_level_names():
    names = _readme_names()
    assert len(names) == len(set(names)), "a name is listed twice"
    assert sorted(names) == sorted(sl.__all__)


def test_the_readme_section_follows_the_method_in_a_few_calls():
    heads = re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), re.M)
    assert heads[heads.index("The method in a few calls") + 1] == "One import"


@pytest.mark.parametrize("name", sl.__all__)
def test_every_name_resolves_and_is_the_modules_own(name):
    value = getattr(sl, name)
    if isinstance(value, types.ModuleType):
        assert value is importlib.import_module(f"skill_lens.{sl._MODULES[name]}")
    else:
        assert value is getattr(sys.modules[value.__module__], name)
        assert value.__doc__


def test_probe_and_capture_are_the_functions_and_their_modules_live_in_probing():
    import skill_lens.probing.capture  # noqa: F401
    import skill_lens.probing.probe  # noqa: F401
    from skill_lens.probing.result import ProbeResult
    from skill_lens.probing.probe import probe

    assert sl.probe is probe and isinstance(sl.probe, types.FunctionType) and sl.ProbeResult is ProbeResult
    assert sl.capture is sys.modules["skill_lens.probing.capture"].capture
    from skill_lens import probe as again
    assert again is probe


def test_import_is_lazy():
    code = "import sys, skill_lens; print('torch' in sys.modules, 'skill_lens.probing.probe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_an_unknown_name_says_where_to_look():
    with pytest.raises(AttributeError, match="top-level names are"):
        sl.specificity_matrix  # noqa: B018
