"""The guide (docs/guide/*.md) cannot drift from the code.

1. Every ```python block runs: a chapter's blocks are executed in order in one namespace (a
   fresh one per chapter), in a temporary working directory with PICOCHAT_HOME inside it.
   A block fenced as ```python no-run is pseudo-code and is skipped (use sparingly).
2. Every code reference exists. The convention: inline code of the form
   `path/to/file.py: Name` or `path/to/file.py: Class.method` (also .cpp/.hpp, where each dotted
   part must appear as a whole word in the file). Python names are found with `ast`: a top-level
   def, class or assignment, then members of that class. A bare path in inline code
   (`picochat/model/gpt.py`, `scripts/`) must exist too.
3. Every relative link (chapters, images, code files) resolves, and every image is a PNG under
   200 KB.
4. Measured numbers come from benchmarks/RESULTS.md: a section that cites it names the
   RESULTS.md section in quotes after the citation, that section exists, and every number with
   three or more decimals is one of that section's (as written or rounded). A cheap check: it
   catches numbers from nowhere and sections renamed away, not a number swapped for another of
   the same section.
"""

from __future__ import annotations

import ast
import os
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide"
CHAPTERS = sorted(GUIDE.glob("[0-9][0-9]-*.md"))

FENCE = re.compile(r"^```(\w[\w-]*)?([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
CODE_REF = re.compile(r"`((?:picochat|scripts|tests|benchmarks|docs)/[\w./-]+\.(?:py|cpp|hpp)): ([A-Za-z_][\w.]*)`")
BARE_PATH = re.compile(r"`((?:picochat|scripts|tests|benchmarks|docs)/[\w./-]*)`")
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each runnable python block."""
    out = []
    for m in FENCE.finditer(text):
        lang, rest = m.group(1) or "", m.group(2).strip()
        if lang == "python" and rest != "no-run":
            out.append((text[:m.start()].count("\n") + 2, m.group(3)))
    return out


def prose(text: str) -> str:
    """The text outside fenced blocks (references and links are checked there)."""
    return FENCE.sub("", text)


def _members(body: list[ast.stmt]) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names[t.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def defined(path: Path, dotted: str) -> bool:
    source = path.read_text()
    if path.suffix != ".py":
        return all(re.search(rf"\b{re.escape(part)}\b", source) for part in dotted.split("."))
    body: list[ast.stmt] = ast.parse(source).body
    for part in dotted.split("."):
        node = _members(body).get(part)
        if node is None:
            return False
        body = getattr(node, "body", [])
    return True


def test_all_ten_chapters_exist():
    numbers = [p.name[:2] for p in CHAPTERS]
    assert numbers == [f"{i:02d}" for i in range(1, 11)], numbers
    assert (GUIDE / "README.md").exists()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_python_blocks_run(chapter: Path, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PICOCHAT_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    namespace: dict = {"__name__": f"guide_{chapter.stem.replace('-', '_')}"}
    for line, code in python_blocks(chapter.read_text()):
        try:
            exec(compile(code, f"{chapter.name}:{line}", "exec"), namespace)
        except Exception as e:  # say which block broke
            raise AssertionError(f"{chapter.name}, the python block at line {line} failed: {e!r}") from e


def test_code_references_exist():
    problems, count = [], 0
    for chapter in [*CHAPTERS, GUIDE / "README.md"]:
        text = prose(chapter.read_text())
        for path, name in CODE_REF.findall(text):
            count += 1
            file = ROOT / path
            if not file.is_file():
                problems.append(f"{chapter.name}: {path} does not exist")
            elif not defined(file, name):
                problems.append(f"{chapter.name}: {name} is not defined in {path}")
        for path in BARE_PATH.findall(text):
            if "<" not in path and not (ROOT / path).exists():
                problems.append(f"{chapter.name}: {path} does not exist")
        for span in INLINE_CODE.findall(text):  # a reference the checker would not see is an error too
            if re.search(r"\.(?:py|cpp|hpp):", span) and not CODE_REF.fullmatch(f"`{span}`"):
                problems.append(f"{chapter.name}: malformed code reference `{span}` (write `path.py: Name`)")
    assert not problems, "\n".join(problems)
    assert count >= 50, f"only {count} code references found: is the convention still `file.py: Name`?"


def test_links_and_images_resolve():
    problems = []
    for chapter in [*CHAPTERS, GUIDE / "README.md", ROOT / "README.md"]:
        for target in LINK.findall(prose(chapter.read_text())):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            path = (chapter.parent / target.split("#")[0]).resolve()
            if not path.exists():
                problems.append(f"{chapter.relative_to(ROOT)}: link {target} does not resolve")
    assert not problems, "\n".join(problems)
    for png in (GUIDE / "img").glob("*"):
        assert png.suffix == ".png", f"{png.name}: figures are PNG"
        assert png.stat().st_size < 200_000, f"{png.name} is {png.stat().st_size} bytes (limit 200 KB)"


RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MEASURED = re.compile(r"(?<![\w.:])(\d+\.\d{3,})(?!\d)")   # 3+ decimals; not arXiv:2410.17897
RESULTS_SECTION = re.compile(r"RESULTS\.md`?,? \(?\"([^\"]+)\"")


def results_sections(results: str) -> dict[str, str]:
    """RESULTS.md's sections by heading, each with its subsections."""
    lines, out = results.splitlines(), {}
    for i, line in enumerate(lines):
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].startswith("#") and len(lines[j]) - len(lines[j].lstrip("#")) <= level), len(lines))
            out[line.lstrip("#").strip()] = "\n".join(lines[i:end])
    return out


def unsourced_numbers(text: str, results: str) -> list[str]:
    """Problems with the measured numbers of `text`: in each `## ` section that cites RESULTS.md,
    every number with 3+ decimals must be one of the cited RESULTS.md sections' numbers, as
    written or rounded to as many decimals (signs aside: "lost 0.037" for +0.0369), and a
    section that quotes such numbers must name its RESULTS.md section."""
    sections, problems = results_sections(results), []
    for part in re.split(r"^## ", prose(text), flags=re.M):
        if "RESULTS.md" not in part:
            continue
        title, names = part.splitlines()[0], RESULTS_SECTION.findall(part)
        cited = [body for heading, body in sections.items() for name in names if heading.startswith(name)]
        problems += [f"{title}: RESULTS.md has no section \"{n}\"" for n in names
                     if not any(h.startswith(n) for h in sections)]
        numbers = MEASURED.findall(re.sub(r"\$[^$]*\$", "", part))
        if numbers and not names:
            problems.append(f"{title}: quotes {numbers[0]} but names no RESULTS.md section (\"...\" after it)")
        have = [Decimal(x) for body in cited for x in re.findall(r"\d+\.\d+", body)]
        for number in numbers:
            want = Decimal(number)
            unit = Decimal(1).scaleb(want.as_tuple().exponent)
            if cited and not any(r.as_tuple().exponent <= want.as_tuple().exponent and want in (
                    r.quantize(unit, ROUND_HALF_UP), r.quantize(unit, ROUND_HALF_EVEN)) for r in have):
                problems.append(f"{title}: {number} is not in RESULTS.md's {', '.join(names)}")
    return problems


def test_measured_numbers_are_the_results_files():
    results = RESULTS.read_text()
    problems = [f"{chapter.name}: {p}" for chapter in CHAPTERS for p in unsourced_numbers(chapter.read_text(), results)]
    assert not problems, "\n".join(problems)
    # the check can fail: a number the cited section does not hold, a section that is not there
    results = "## Speed\nbpb 1.2346\n## Other\nbpb 1.2345\n"
    assert unsourced_numbers('## A\nbpb 1.2346 (RESULTS.md, "Speed")\n', results) == []
    assert unsourced_numbers('## A\nlost 1.235 (RESULTS.md, "Speed")\n', results) == []
    assert len(unsourced_numbers('## A\nbpb 1.2345 (RESULTS.md, "Speed")\n', results)) == 1
    assert unsourced_numbers('## A\nbpb 1.2346 (RESULTS.md, "Slow")\n', results) == \
        ['A: RESULTS.md has no section "Slow"']
    assert len(unsourced_numbers("## A\nbpb 1.2346 (RESULTS.md)\n", results)) == 1


def test_checker_catches_a_missing_name(tmp_path):
    """The reference checker is not vacuous: it rejects names that are not there."""
    assert defined(ROOT / "picochat/model/gpt.py", "CausalSelfAttention.forward")
    assert not defined(ROOT / "picochat/model/gpt.py", "CausalSelfAttention.backward")
    assert not defined(ROOT / "picochat/model/gpt.py", "NoSuchThing")
    assert python_blocks("```python\nx = 1\n```\n```python no-run\ny\n```\n") == [(2, "x = 1\n")]


def test_guide_is_linked_from_readme():
    assert "docs/guide/" in (ROOT / "README.md").read_text()
    assert os.path.exists(GUIDE / "img")


def _figure_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "scripts" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figure_script_draws_the_figures_that_need_no_training(tmp_path, monkeypatch):
    figures = _figure_script()
    monkeypatch.setattr(figures, "OUT", tmp_path)
    figures.figure_bpe()
    figures.figure_schedule()
    figures.figure_rope()
    for name in ("bpe_merges.png", "lr_schedule.png", "rope.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size < 200_000


def test_attention_figure_shows_the_models_own_attention():
    """The script recomputes attention weights (SDPA hides them); with them, weights @ values
    through the output projection must reproduce the layer's real output."""
    import torch
    from helpers.tiny import tiny_gpt

    from picochat.model.gpt import rms_norm

    figures = _figure_script()
    model = tiny_gpt(40, seq_len=16, n_layer=2, n_head=4, std=0.3)
    idx = torch.randint(0, 40, (1, 10))
    maps = figures.attention_maps(model, idx)
    assert len(maps) == 2 and maps[0].shape == (4, 10, 10)
    assert torch.allclose(maps[1].sum(-1), torch.ones(4, 10)) and torch.all(maps[1].triu(1) == 0)
    attn = model.blocks[0].attn
    with torch.no_grad():
        x = rms_norm(rms_norm(model.wte(idx)))                           # the block's normalised input
        v = attn.c_v(x).view(1, 10, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)[0]   # (H, T, D)
        y = attn.c_proj((maps[0] @ v).transpose(0, 1).reshape(1, 10, 32))
        real = attn(x, model.cos[:, :10], model.sin[:, :10])
    assert torch.allclose(y, real, atol=1e-4)
