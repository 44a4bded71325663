"""CORE: prompt rendering, row preparation and scoring checked against hand-computed values on a
fixed bigram model, the centred mean on a small bundle, and a smoke run over the real task files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers.tiny import save_run, tiny_gpt

from picochat.eval import core

pytestmark = pytest.mark.timeout(300)

CHARS = " abcdxy\n"  # the char tokenizer's alphabet; BOS is id 8


class CharTokenizer:
    def __init__(self, chars: str = CHARS):
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.bos_id = len(chars)

    def encode(self, text: str, prepend: int | None = None) -> list[int]:
        return ([prepend] if prepend is not None else []) + [self.stoi[c] for c in text]


def tid(c: str) -> int:
    return CHARS.index(c)


def bigram_probs() -> torch.Tensor:
    """Uniform next-char distributions except a few rows we reason about by hand."""
    V = len(CHARS) + 1
    p = torch.full((V, V), 1.0 / V)

    def row(cur: str, favourite: str, prob: float) -> None:
        p[tid(cur)] = (1 - prob) / (V - 1)
        p[tid(cur), tid(favourite)] = prob

    row(" ", "c", 0.5)   # after a space, 'c' is likely (and the argmax)
    row("c", "d", 0.9)   # 'c' is followed by 'd'
    row("x", " ", 0.6)   # 'x' is followed by a space
    row("y", " ", 0.1)   # 'y' rarely is
    row("a", " ", 0.4)   # argmax after 'a' is a space
    return p


class Bigram(torch.nn.Module):
    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logp", probs.log())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logp[idx]


def P(nxt: str, cur: str) -> float:
    return bigram_probs()[tid(cur), tid(nxt)].item()


def spec(task_type: str, shots: int = 0, delim: str = " ", baseline: float = 0.0) -> core.TaskSpec:
    return core.TaskSpec("t", task_type, "t.jsonl", shots, delim, baseline)


# ---------------------------------------------------------------------------------------------
# rendering


def test_render_multiple_choice_with_shots():
    shots = [{"query": "Q1", "choices": ["no", "yes"], "gold": 1}, {"query": "Q2", "choices": ["x"], "gold": 0}]
    item = {"query": "Q3", "choices": ["A", "B"], "gold": 0}
    assert core.render_mc(item, "\nAnswer: ", shots) == [
        "Q1\nAnswer: yes\n\nQ2\nAnswer: x\n\nQ3\nAnswer: A",
        "Q1\nAnswer: yes\n\nQ2\nAnswer: x\n\nQ3\nAnswer: B",
    ]


def test_render_schema_with_shots():
    shots = [{"context_options": ["c0", "c1"], "continuation": "k", "gold": 1}]
    item = {"context_options": ["The cat", "The dog"], "continuation": "barked.", "gold": 1}
    assert core.render_schema(item, " ", shots) == ["c1 k\n\nThe cat barked.", "c1 k\n\nThe dog barked."]


def test_render_language_modeling_strips_contexts_and_the_bare_prompt():
    shots = [{"context": "  2+2= ", "continuation": "4"}]
    item = {"context": "3+3=  ", "continuation": "6"}
    assert core.render_lm(item, " ", shots) == ["2+2= 4\n\n3+3=", "2+2= 4\n\n3+3= 6"]
    assert core.render_lm(item, "\nAnswer: ", []) == ["3+3=\nAnswer:", "3+3=\nAnswer: 6"]


def test_fewshot_indices_exclude_the_item_and_are_deterministic():
    for idx in range(6):
        shots = core.fewshot_indices(idx, 7, 3)
        assert len(shots) == 3 == len(set(shots)) and idx not in shots
        assert shots == core.fewshot_indices(idx, 7, 3)
    assert core.fewshot_indices(0, 7, 0) == [] and core.fewshot_indices(0, 1, 3) == []
    assert sorted(core.fewshot_indices(1, 3, 10)) == [0, 2]  # capped at the other examples


# ---------------------------------------------------------------------------------------------
# preparation and scoring against hand-computed losses


def score(prepared: core.Prepared) -> list[tuple[float, bool]]:
    return core.score_batch(Bigram(bigram_probs()), [prepared], CharTokenizer().bos_id, "cpu")[0]


def test_multiple_choice_scores_mean_loss_of_the_choice_tokens():
    tok, item = CharTokenizer(), {"query": "x", "choices": ["ab", "cd"], "gold": 1}
    p = core.prepare(0, [item], spec("multiple_choice"), tok)
    assert p.rows[0] == tok.encode("x ab", prepend=tok.bos_id)
    assert p.starts == [3, 3] and p.ends == [5, 5]  # common prefix [bos, x, ' ']
    (l0, _), (l1, _) = score(p)
    assert l0 == pytest.approx(-(math.log(P("a", " ")) + math.log(P("b", "a"))) / 2, abs=1e-5)
    assert l1 == pytest.approx(-(math.log(P("c", " ")) + math.log(P("d", "c"))) / 2, abs=1e-5)
    assert core.judge(p, "multiple_choice", score(p)) is True  # "cd" has the lower mean loss
    p.gold = 0
    assert core.judge(p, "multiple_choice", score(p)) is False


def test_schema_scores_the_shared_continuation_under_each_context():
    tok, item = CharTokenizer(), {"context_options": ["x", "y"], "continuation": "ab", "gold": 0}
    p = core.prepare(0, [item], spec("schema"), tok)
    assert p.starts == [2, 2] and p.ends == [5, 5]  # common suffix " ab" = 3 tokens
    (l0, _), (l1, _) = score(p)
    rest = math.log(P("a", " ")) + math.log(P("b", "a"))
    assert l0 == pytest.approx(-(math.log(P(" ", "x")) + rest) / 3, abs=1e-5)
    assert l1 == pytest.approx(-(math.log(P(" ", "y")) + rest) / 3, abs=1e-5)
    assert core.judge(p, "schema", score(p)) is True


def test_language_modeling_needs_every_continuation_token_as_argmax():
    tok = CharTokenizer()
    right = core.prepare(0, [{"context": " xa ", "continuation": "c"}], spec("language_modeling"), tok)
    assert right.rows == [tok.encode("xa c", prepend=tok.bos_id)] and (right.starts, right.ends) == ([3], [5])
    (loss, exact), = score(right)  # argmax after 'a' is ' ', after ' ' is 'c'
    assert exact and loss == pytest.approx(-(math.log(P(" ", "a")) + math.log(P("c", " "))) / 2, abs=1e-5)
    wrong = core.prepare(0, [{"context": "xa", "continuation": "b"}], spec("language_modeling"), tok)
    assert core.judge(wrong, "language_modeling", score(wrong)) is False


def test_crop_keeps_the_last_tokens_and_shifts_the_span():
    p = core.Prepared([list(range(10)), list(range(4))], [6, 2], [10, 4], 0)
    c = core.crop(p, 5)
    assert c.rows == [list(range(5, 10)), list(range(4))]
    assert c.starts == [1, 2] and c.ends == [5, 4]


# ---------------------------------------------------------------------------------------------
# a whole (tiny) bundle: accuracy, centring, missing tasks, the CORE-n label


def write_bundle(root: Path) -> Path:
    (root / "eval_data").mkdir(parents=True)
    tasks = [("mc", "multiple_choice", 1, 25), ("sch", "schema", 0, 50), ("lm", "language_modeling", 0, 0),
             ("gone", "multiple_choice", 0, 25)]
    yaml = "icl_tasks:\n" + "".join(
        f"- label: {label}\n  dataset_uri: {label}.jsonl\n  num_fewshot:\n  - {k}\n  icl_task_type: {t}\n"
        for label, t, k, _ in tasks)
    (root / "core.yaml").write_text(yaml)
    (root / "eval_meta_data.csv").write_text(
        "Eval Task,Task Category,Task Type,#shots,#datapoints,Random baseline,Centered Metric?,Description\n"
        + "".join(f"{label},c,{t},{k},2,{rb},,d\n" for label, t, k, rb in tasks))
    rows = {
        "mc": [{"query": "x", "choices": ["ab", "cd"], "gold": 1}, {"query": "x", "choices": ["ab", "cd"], "gold": 0}],
        "sch": [{"context_options": ["x", "y"], "continuation": "ab", "gold": 0},
                {"context_options": ["x", "y"], "continuation": "ab", "gold": 1}],
        "lm": [{"context": "xa", "continuation": "c"}, {"context": "xa", "continuation": "b"}],
    }
    for label, items in rows.items():
        (root / "eval_data" / f"{label}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return root


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_evaluate_core_on_a_tiny_bundle(tmp_path, batch_size):
    bundle = write_bundle(tmp_path / "core_icl")
    res = core.evaluate_core(Bigram(bigram_probs()), CharTokenizer(), bundle, batch_size=batch_size, log=None)
    assert res.accuracy == {"mc": 0.5, "sch": 0.5, "lm": 0.5}
    assert res.centered["mc"] == pytest.approx((0.5 - 0.25) / 0.75)
    assert res.centered["sch"] == pytest.approx(0.0) and res.centered["lm"] == pytest.approx(0.5)
    assert res.missing == ["gone"] and res.name == "CORE-3"
    assert res.score == pytest.approx(((0.25 / 0.75) + 0.0 + 0.5) / 3)
    assert res.to_dict()["metric"] == "CORE-3"


def test_unknown_task_is_a_user_error(tmp_path):
    from picochat.common.errors import UserError

    bundle = write_bundle(tmp_path / "core_icl")
    with pytest.raises(UserError):
        core.evaluate_core(Bigram(bigram_probs()), CharTokenizer(), bundle, tasks=["nope"], log=None)


def test_missing_bundle_is_a_user_error(tmp_path, monkeypatch):
    from picochat.common.errors import UserError

    monkeypatch.delenv("PICOCHAT_MIRROR", raising=False)
    with pytest.raises(UserError, match="CORE eval bundle"):
        core.bundle_dir(mirror=str(tmp_path), home=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# the real task files (skipped without the mirror)


def real_bundle() -> Path:
    mirror = os.environ.get("PICOCHAT_MIRROR", "")
    if not mirror or not (Path(mirror) / "core_icl" / "core.yaml").is_file():
        pytest.skip("PICOCHAT_MIRROR with core_icl/ is not available")
    return core.bundle_dir(mirror)


def test_real_bundle_specs_match_the_published_task_table():
    specs = {s.label: s for s in core.load_specs(real_bundle())}
    assert len(specs) == 22
    assert specs["arc_easy"].delimiter == "\nAnswer: " and specs["arc_easy"].num_fewshot == 10
    assert specs["commonsense_qa"].random_baseline == 40.3 and specs["boolq"].random_baseline == 62
    assert specs["winogrande"].task_type == "schema" and specs["lambada_openai"].num_fewshot == 0


def test_smoke_all_present_tasks_with_a_tiny_gpt(tok):
    bundle = real_bundle()
    model = tiny_gpt(tok.vocab_size, seq_len=64).eval()
    res = core.evaluate_core(model, tok, bundle, max_per_task=3, batch_size=16, log=None)
    assert res.name == "CORE-18" and len(res.accuracy) == 18
    assert sorted(res.missing) == ["coqa", "hellaswag", "hellaswag_zeroshot", "squad"]
    assert all(0.0 <= a <= 1.0 for a in res.accuracy.values())
    again = core.evaluate_core(model, tok, bundle, max_per_task=3, batch_size=1, log=None,
                               tasks=["copa", "winograd", "lambada_openai"])
    assert all(again.accuracy[k] == res.accuracy[k] for k in again.accuracy)


def test_cli_eval_core_on_a_tiny_bundle(tmp_path, tok, monkeypatch):
    from picochat import cli
    from picochat.common.paths import stage_dir

    monkeypatch.setenv("PICOCHAT_HOME", str(tmp_path / "home"))
    write_bundle(tmp_path / "mirror" / "core_icl")
    save_run(tmp_path / "home", tok, tiny_gpt(tok.vocab_size), stage="base", step=3)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "core", "--run", "t", "--device", "cpu", "--mirror", str(tmp_path / "mirror")])
    assert e.value.code == 0
    out = json.loads((stage_dir("t", "base") / "eval" / "core.json").read_text())
    assert out["metric"] == "CORE-3" and out["missing"] == ["gone"] and out["step"] == 3
    assert set(out["accuracy"]) == {"mc", "sch", "lm"}
