"""No machine's paths in the library or the benchmarks: they run on any clone."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"/(?:work|tmp|home|root)/")


def _machine_paths(folder: Path) -> list[str]:
    return [f"{path.relative_to(folder.parent)}:{n}: {line.strip()}"
            for path in sorted(folder.rglob("*.py")) if "__pycache__" not in path.parts
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if MACHINE_PATH.search(line)]


def test_no_absolute_machine_paths_in_the_library_or_benchmarks():
    found = _machine_paths(ROOT / "skill_lens") + _machine_paths(ROOT / "benchmarks")
    assert not found, ("absolute paths of one machine; resolve from the repository "
                       "(Path(__file__).resolve().parents[1]) or use a temporary directory:\n" + "\n".join(found))


def test_the_check_can_fail(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text('DATA = "/work/shared/data"\nRUN = "runs/rt"\nOUT = "/tmp/x"\nHOME = "~/x"\n')
    assert [f.split(":")[1] for f in _machine_paths(pkg)] == ["1", "3"]
