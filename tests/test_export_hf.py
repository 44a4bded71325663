"""`picochat export hf`: the folder loads with transformers' own classes (no remote code) and
computes what picochat computes: the same token ids (plain text and the chat template), the same
logits within fp32 rounding, the same greedy reply as picochat's engine."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers.tiny import save_run

from picochat.common.paths import stage_dir
from picochat.engine.engine import Engine
from picochat.export.hf import export_hf
from picochat.export.hf_model import ExportError
from picochat.export.hf_tokenizer import CHECK_TEXT
from picochat.model import artifact
from picochat.model.gpt import GPT, GPTConfig
from picochat.tokenizer.chat import render_conversation, render_for_completion
from picochat.tokenizer.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 12 × 7?  Answer   in digits, s'il vous plaît 🙂\n"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me compute: "},
        {"type": "python", "text": "12 * 7"},
        {"type": "python_output", "text": "84"},
        {"type": "text", "text": " It is 84."}]},
    {"role": "user", "content": [{"type": "text", "text": "And 1000000 + 23?\t\tThanks!"}]},
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    text = open_shakespeare()
    return Tokenizer.train([text, CHECK_TEXT * 3, json.dumps(CONVERSATION, ensure_ascii=False)], vocab_size=2048)


def open_shakespeare() -> str:
    import os
    from pathlib import Path

    path = Path(os.environ.get("PICOCHAT_MIRROR", "")) / "tinyshakespeare" / "input.txt"
    base = path.read_text()[:200_000] if path.is_file() else ""
    return base + ("The quick brown fox jumps over the lazy dog 0123456789. " * 200)


def demo_shaped_model(vocab: int, n_kv_head: int) -> GPT:
    """The demo preset's shape (3 layers, width 192, head dim 64, 256-token context), with every
    matrix random so that each block (and the rotary embedding) shapes the logits."""
    torch.manual_seed(1234)
    cfg = GPTConfig.from_depth(3, head_dim=64, vocab_size=vocab, seq_len=256, n_kv_head=n_kv_head)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 1.0 if name == "wte.weight" else 1.0 / math.sqrt(p.size(1))
            p.normal_(0.0, std)
    return model.eval()


def make_run(home, tok: Tokenizer, model: GPT, stage: str = "sft") -> None:
    save_run(home, tok, model, stage, num_params=model.num_params(), final={"step": 40})


@pytest.fixture(scope="module", params=[0, 1], ids=["mha", "mqa"])
def exported(request, tok, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    model = demo_shaped_model(tok.vocab_size, request.param)
    make_run(home, tok, model)
    bpb = stage_dir("t", "sft", str(home)) / "eval" / "bpb.json"  # an eval, so the card has a number to carry
    bpb.parent.mkdir(parents=True)
    bpb.write_text(json.dumps({"bpb": 1.25, "bytes": 1000}))
    from picochat.eval.report import write_report

    write_report("t", str(home))
    out = export_hf("t", home / "hf", home=str(home))
    return model, out


def test_loads_with_transformers_own_classes(exported):
    _, out = exported
    model = transformers.AutoModelForCausalLM.from_pretrained(out)  # trust_remote_code is off by default
    assert type(model).__name__ == "NanoChatForCausalLM" and type(model).__module__.startswith("transformers.")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                     "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    card = (out / "README.md").read_text()
    assert "| metric | SFT |" in card and "| bits per byte (1.0k bytes) | 1.2500 |" in card
    assert "NanoChatForCausalLM" in card


def test_tokenizer_and_chat_template_give_picochats_ids(exported, tok):
    _, out = exported
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert hf(CHECK_TEXT, add_special_tokens=False)["input_ids"] == tok.encode(CHECK_TEXT)
    assert hf("Hello there")["input_ids"] == tok.encode("Hello there", prepend=tok.bos_id)  # a document
    full = hf.apply_chat_template(CONVERSATION[:3], tokenize=True, return_dict=True)["input_ids"]
    assert full == render_conversation(tok, CONVERSATION[:3])[0]
    prompt = hf.apply_chat_template(CONVERSATION, tokenize=True, add_generation_prompt=True,
                                    return_dict=True)["input_ids"]
    assert prompt == render_for_completion(tok, CONVERSATION)
    assert hf.decode(prompt) == tok.decode(prompt)  # special tokens and tool markers kept
    for name, i in tok.special_tokens.items():
        assert hf.convert_tokens_to_ids(name) == i
    with pytest.raises(Exception, match="alternate"):
        hf.apply_chat_template([{"role": "assistant", "content": "hi"}], tokenize=False)


def test_logits_match_within_fp32_rounding(exported, tok):
    ours, out = exported
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([render_conversation(tok, CONVERSATION[:3])[0]])
    with torch.no_grad():
        want, got = ours(ids), theirs(ids).logits
    assert want.std() > 0.5  # the random model is far from uniform: the comparison has teeth
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_greedy_reply_matches_picochats_engine(exported, tok):
    ours, out = exported
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf = transformers.AutoTokenizer.from_pretrained(out)
    conv = CONVERSATION[:1] + [{"role": "user", "content": "Tell me a story about a fox."}]
    prompt = render_for_completion(tok, conv)
    want = Engine(ours, tok, tool=None).generate([prompt], temperature=0.0, max_tokens=32)[0][0].ids
    inputs = hf.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        got = theirs.generate(**inputs, do_sample=False, max_new_tokens=32)[0, len(prompt):].tolist()
    assert len(want) == 32 or want[-1] in (tok.bos_id, tok.special_id("<|assistant_end|>"))
    assert got == want


def umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_refuses_what_it_cannot_map(tmp_path, tok):
    model = demo_shaped_model(tok.vocab_size, 0)
    make_run(tmp_path, tok, model)
    export_hf("t", tmp_path / "ok", home=str(tmp_path))
    assert (tmp_path / "ok").stat().st_mode & 0o055 == (~umask() & 0o055)  # not mkdtemp's private 0700
    with pytest.raises(Exception, match="already exists and is not empty"):
        export_hf("t", tmp_path / "ok", home=str(tmp_path))
    export_hf("t", tmp_path / "ok", home=str(tmp_path), force=True)  # --force replaces it
    state = {**model.state_dict(), "blocks.0.attn.value_gate.weight": torch.zeros(3)}
    artifact.save_artifact(stage_dir("t", "rl", str(tmp_path)), state, {"model_config": model.config.to_dict()})
    with pytest.raises(ExportError, match="unmapped: blocks.0.attn.value_gate.weight"):
        export_hf("t", tmp_path / "rl", home=str(tmp_path))
    meta = {"model_config": {**model.config.to_dict(), "value_embeds": True}}
    artifact.save_artifact(stage_dir("t", "rl", str(tmp_path)), model, meta)
    with pytest.raises(ExportError, match="uses value embeddings"):
        export_hf("t", tmp_path / "rl", stage="rl", home=str(tmp_path))
    meta = {"model_config": {**model.config.to_dict(), "mixture_of_depths": 2}}
    artifact.save_artifact(stage_dir("t", "rl", str(tmp_path)), model, meta)
    with pytest.raises(ExportError, match=r"does not map \(mixture_of_depths\)"):
        export_hf("t", tmp_path / "rl", stage="rl", home=str(tmp_path))
    assert not (tmp_path / "rl").exists()


def test_cli_writes_the_folder_and_errors_in_one_sentence(tmp_path, tok, capsys):
    from picochat.cli import main

    make_run(tmp_path, tok, demo_shaped_model(tok.vocab_size, 0), stage="base")
    with pytest.raises(SystemExit) as e:
        main(["export", "hf", "--home", str(tmp_path), "--run", "t", str(tmp_path / "out")])
    assert e.value.code == 0 and (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(SystemExit) as e:
        main(["export", "hf", "--home", str(tmp_path), "--run", "t", "--stage", "sft", str(tmp_path / "o2")])
    assert e.value.code != 0 and "no finished 'sft' model" in capsys.readouterr().err


def test_bfloat16_export_is_within_bf16_rounding(tmp_path, tok):
    model = demo_shaped_model(tok.vocab_size, 0)
    make_run(tmp_path, tok, model)
    out = export_hf("t", tmp_path / "bf16", home=str(tmp_path), dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert theirs.lm_head.weight.dtype == torch.bfloat16
    ids = torch.tensor([render_conversation(tok, CONVERSATION[:3])[0]])
    with torch.no_grad():
        want, got = model(ids), theirs(ids).logits.float()
    assert (got - want).abs().mean() < 0.1 * want.abs().mean()  # bf16 keeps ~3 significant digits
    with pytest.raises(Exception, match="unknown --dtype 'fp8'"):
        export_hf("t", tmp_path / "fp8", home=str(tmp_path), dtype="fp8")


def test_tokenizer_json_follows_tiktokens_rule_on_random_merge_tables():
    """Random merge tables over 2-3 letters (the vocabularies where the same bytes are reachable by many
    cuts, and where listing only each token's creating pair fails in about half the tables)."""
    import random

    from tokenizers import Tokenizer as HFTokenizer

    from picochat.export.hf_tokenizer import tokenizer_json

    checked = 0
    for seed in range(120):
        rng = random.Random(seed)
        alphabet = [97, 98] if seed % 2 else [97, 98, 99]
        ids, merges = list(alphabet), []
        for i in range(rng.randint(3, 25)):
            merges.append((rng.choice(ids), rng.choice(ids)))
            ids.append(256 + i)
        tok = Tokenizer(merges)
        if not tok._complete:
            continue  # the same bytes twice: refused by the exporter (tested below)
        hf = HFTokenizer.from_str(json.dumps(tokenizer_json(tok)))
        texts = ["".join(chr(rng.choice(alphabet)) for _ in range(rng.randint(1, 30))) for _ in range(100)]
        got = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        assert got == tok.encode_batch(texts), seed
        checked += 1
    assert checked > 30
    with pytest.raises(ExportError, match="two of this tokenizer's ids have the same bytes"):
        tokenizer_json(Tokenizer([(97, 98), (256, 99), (98, 99), (97, 258)]))  # "abc" twice


@pytest.mark.parametrize("n_head, n_kv_head, softcap", [(6, 2, 15.0), (4, 4, 0.0)], ids=["gqa", "no-softcap"])
def test_model_mapping_on_grouped_heads_and_without_softcap(n_head, n_kv_head, softcap):
    """Query head h reads key/value head h // (H / Hkv) on both sides; softcap 0 means none."""
    from picochat.export.hf_model import hf_config, hf_state_dict

    torch.manual_seed(0)
    ours = GPT(GPTConfig(sequence_len=32, vocab_size=64, n_layer=2, n_head=n_head, n_kv_head=n_kv_head,
                         n_embd=32 * n_head, softcap=softcap)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.size(-1)))
    cfg = ours.config.to_dict()
    config = transformers.NanoChatConfig(**{k: v for k, v in hf_config(cfg, 0, 1, torch.float32).items()
                                            if k not in ("architectures", "model_type", "dtype")})
    theirs = transformers.NanoChatForCausalLM(config).eval()
    theirs.load_state_dict(hf_state_dict(ours.state_dict(), cfg, torch.float32), strict=True)
    ids = torch.randint(0, 64, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)
