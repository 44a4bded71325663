"""benchmarks/nanochat_seeded.py: base_train's init reseeded, nothing else changed (issue #26).

A stand-in checkout with nanochat's shape (nanochat/common.py: compute_init seeding 42;
scripts/base_train.py importing it by name) shows the wrapper reaches the seed base_train uses."""

import subprocess
import sys
from pathlib import Path

WRAPPER = Path(__file__).resolve().parents[1] / "benchmarks" / "nanochat_seeded.py"


def _checkout(tmp_path: Path) -> Path:
    (tmp_path / "nanochat").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "nanochat" / "__init__.py").write_text("")
    (tmp_path / "scripts" / "__init__.py").write_text("")
    (tmp_path / "nanochat" / "common.py").write_text(
        "import torch\ndef compute_init(device_type='cpu'):\n    torch.manual_seed(42)\n    return device_type\n")
    (tmp_path / "scripts" / "base_train.py").write_text(
        "import sys, torch\nfrom nanochat.common import compute_init\n"
        "compute_init()\nprint(sys.argv[1:], torch.rand(1).item())\n")
    return tmp_path


def _run(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WRAPPER), *args], cwd=checkout, capture_output=True, text=True)


def test_reseeds_the_init_and_passes_the_flags_through(tmp_path):
    co = _checkout(tmp_path)
    plain = subprocess.run([sys.executable, "-m", "scripts.base_train", "--depth", "4"], cwd=co,
                           capture_output=True, text=True).stdout
    same, other = _run(co, "42", "--depth", "4").stdout, _run(co, "1", "--depth", "4").stdout
    assert plain.startswith("['--depth', '4']")
    assert same == plain      # seed 42 is base_train's own: the identical run
    assert other != plain     # another seed: other initial weights


def test_refuses_a_missing_seed(tmp_path):
    proc = _run(_checkout(tmp_path), "--depth", "4")
    assert proc.returncode != 0 and "usage" in proc.stderr and "Traceback" not in proc.stderr
