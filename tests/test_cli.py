"""The CLI surface: every command has a --help; config precedence; user errors are one sentence."""

import subprocess
import sys

import pytest

from picochat import config as C
from picochat.cli import COMMANDS, build_parser, main, resolve


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "picochat", *argv], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c.words))
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd.words, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert cmd.help.split(" (")[0][:30] in out.replace("\n", " ") or cmd.help[:20] in out


def test_train_commands_hand_the_stages_their_evaluators(monkeypatch):
    """`picochat train <stage>` (and so the speedrun and torchrun's re-exec, which run the same table)
    goes through cli/train.py, which hands each stage eval's evaluators: training imports none."""
    import importlib

    from picochat.cli import train as train_commands
    from picochat.eval.chat import evaluate_policy
    from picochat.eval.in_loop import chatcore_in_loop, core_in_loop
    from picochat.eval.report import metrics_table

    for cmd in COMMANDS:
        module, func = cmd.target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), cmd.target
        if cmd.words[0] == "train":
            assert cmd.target == f"picochat.cli.train:{cmd.words[1]}_main"
    assert train_commands.CHAT_EVALS.in_loop is chatcore_in_loop
    calls = {}
    for stage in ("base", "mid", "sft", "rl"):
        monkeypatch.setattr(getattr(train_commands, stage), "main",
                            lambda cfg, evals, stage=stage: calls.setdefault(stage, evals))
        getattr(train_commands, f"{stage}_main")(None)
    assert calls["base"].in_loop is core_in_loop and calls["sft"].in_loop is calls["mid"].in_loop is chatcore_in_loop
    assert calls["rl"].policy is evaluate_policy and calls["rl"].in_loop is None
    assert all(e.report_card is metrics_table for e in calls.values())


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for noun in {c.words[0] for c in COMMANDS}:
        assert noun in out


def _resolved(*argv: str, toml: str | None = None, tmp_path=None):
    if toml is not None:
        path = tmp_path / "run.toml"
        path.write_text(toml)
        argv = (*argv, "--config", str(path))
    ns = build_parser().parse_args(["train", "base", *argv])
    return resolve(ns._command, ns)


def test_precedence_preset_toml_flags(tmp_path):
    cfg = _resolved("--preset", "d20", tmp_path=tmp_path)
    assert cfg.model.depth == 20 and cfg.run.run == "d20"
    cfg = _resolved("--preset", "d20", toml="[model]\ndepth = 12\n[train]\nmatrix_lr = 0.03\n", tmp_path=tmp_path)
    assert cfg.model.depth == 12 and cfg.train.matrix_lr == 0.03
    cfg = _resolved("--preset", "d20", "--depth", "8", toml="[model]\ndepth = 12\n", tmp_path=tmp_path)
    assert cfg.model.depth == 8  # flags beat the file


def test_bool_flags_and_types():
    cfg = _resolved("--compile", "--matrix-lr", "0.1")
    assert cfg.train.compile is True and cfg.train.matrix_lr == 0.1
    assert _resolved("--no-compile").train.compile is False


@pytest.mark.parametrize("toml, message", [
    ("[model]\ndepht = 3\n", "unknown key 'depht' in [model]"),
    ("[modle]\ndepth = 3\n", "unknown table [modle]"),
    ("[model]\ndepth = 'three'\n", "config key 'depth' should be int"),
    ("[model\n", "is not valid TOML"),
])
def test_bad_toml_is_one_clear_error(tmp_path, toml, message):
    with pytest.raises(C.ConfigError, match=message.replace("[", r"\[")):
        _resolved(toml=toml, tmp_path=tmp_path)


def test_suggestion_for_near_miss(tmp_path):
    with pytest.raises(C.ConfigError, match="did you mean 'depth'"):
        _resolved(toml="[model]\ndepht = 3\n", tmp_path=tmp_path)


def test_user_errors_exit_nonzero_without_traceback(tmp_path):
    r = run_cli("train", "base", "--preset", "demoo")
    assert r.returncode == 2 and "unknown preset 'demoo' (did you mean 'demo'?)" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("train", "base", "--run", "nothing-here", "--home", str(tmp_path))
    assert r.returncode == 2 and "has no tokenizer" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "base", "--depth", "two")
    assert r.returncode == 2 and "invalid int value" in r.stderr


def test_speedrun_dry_run_prints_plan():
    r = run_cli("speedrun", "--preset", "d20", "--dry-run", "--gpus", "8")
    assert r.returncode == 0, r.stderr
    assert "base" in r.stdout and "tokens" in r.stdout and "$" in r.stdout
