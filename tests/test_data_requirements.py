"""Every data/task spec of every preset resolves to a registered, downloadable source split, and
removing any source from the registry makes the resolver name it (the fast half of issue 20's
rehearsal of the real presets)."""

from __future__ import annotations

import pytest

from picochat.common.errors import UserError
from picochat.config import PRESETS
from picochat.data import requirements, sources
from picochat.data.requirements import CHATCORE_DEFAULT, TASK_DATA, check_preset, preset_needs


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_resolves_to_registered_sources(name):
    needs = check_preset(PRESETS[name])
    assert ("core", "bundle") in {(n.source, n.split) for n in needs}


def test_gpu_presets_name_the_datasets_nanochat_uses():
    for name in ("d12", "d20", "d26", "d32"):
        p = PRESETS[name]
        assert p.tokenizer.source == p.stages["base"].source == "climbmix"
        got = {(n.source, n.split) for n in preset_needs(p)}
        assert {("climbmix", "train"), ("climbmix", "val"), ("smoltalk", "train"), ("smoltalk", "test"),
                ("mmlu", "auxiliary_train"), ("arc", "ARC-Easy/train"), ("arc", "ARC-Challenge/train"),
                ("words", "all"), ("gsm8k", "train"), ("humaneval", "test"), ("core", "bundle")} <= got
        assert not any(n.optional for n in preset_needs(p))
    demo = preset_needs(PRESETS["demo"])
    assert {n.source for n in demo} == {"synthetic", "core"}
    assert [n.optional for n in demo if n.source == "core"] == [True]


def _needed_sources() -> set[str]:
    return {n.source for p in PRESETS.values() for n in preset_needs(p) if n.source != "synthetic"}


@pytest.mark.parametrize("missing", sorted(_needed_sources()))
def test_removing_a_source_fails_naming_it(missing, monkeypatch):
    monkeypatch.delitem(sources.REGISTRY, missing)
    failed = [name for name, p in PRESETS.items() if any(n.source == missing for n in preset_needs(p))]
    assert failed
    for name in failed:
        with pytest.raises(UserError, match=f"data source '{missing}', which is not registered"):
            check_preset(PRESETS[name])


def test_a_split_the_source_lacks_or_cannot_download_is_named(monkeypatch):
    p = PRESETS["d20"]
    bad_mid = p.stages["mid"].__class__(**{**vars(p.stages["mid"]), "mixture": "arc_easy:training"})
    monkeypatch.setitem(p.stages, "mid", bad_mid)
    with pytest.raises(UserError, match=r"mid.mixture 'arc_easy:training'.*arc, which has no such split"):
        check_preset(p)
    bad_mid = p.stages["mid"].__class__(**{**vars(p.stages["mid"]), "mixture": "chitchat"})
    monkeypatch.setitem(p.stages, "mid", bad_mid)
    with pytest.raises(UserError, match="no download URL"):
        check_preset(p)
    monkeypatch.setattr(p, "tokenizer", p.tokenizer.__class__(source="gutenberg"))
    with pytest.raises(UserError, match="tokenizer.source reads gutenberg split 'train', whose files have no"):
        check_preset(p)
    bad_mid = p.stages["mid"].__class__(**{**vars(p.stages["mid"]), "mixture": "smoltlak"})
    monkeypatch.setitem(p.stages, "mid", bad_mid)
    with pytest.raises(UserError, match="unknown task 'smoltlak'"):
        check_preset(p)


def test_task_table_matches_the_task_registry_and_chat_defaults():
    from picochat.eval.chat import default_tasks
    from picochat.tasks.registry import task_names

    assert set(TASK_DATA) == set(task_names())
    assert default_tasks("d20") == CHATCORE_DEFAULT
    for name, data in TASK_DATA.items():
        if data.source:
            src = sources.REGISTRY[data.source]
            assert data.split_key.format(split=data.default_split) in src.splits, name


def test_spec_parsing():
    assert requirements.parse_task_spec(" ARC-Easy:train:20 ") == ("arc_easy", "train", 20)
    assert requirements.parse_task_spec("gsm8k") == ("gsm8k", None, None)
    assert requirements.mixture_items("a:train, b*2.5,") == [("a:train", 1.0), ("b", 2.5)]
    with pytest.raises(UserError, match="whole number"):
        requirements.parse_task_spec("gsm8k:test:x")
    with pytest.raises(UserError, match="must be a number"):
        requirements.mixture_items("gsm8k*lots")
