"""Every registered source downloads from a local server that serves files in each dataset's
exact published format (tests/helpers/fake_hub.py), through a URL mirror and through the real URL
patterns (PICOCHAT_URL_PREFIX); the tasks and CORE's loader then read what arrived, and damaged or
wrong files are refused with one sentence."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.fake_hub import CORE_TASKS, build_fake_hub, serve_fake_hub

from picochat.common.errors import UserError
from picochat.config import PRESETS
from picochat.data import download
from picochat.data.corpus import iter_documents, open_corpus
from picochat.data.requirements import download_preset, need_present, preset_needs
from picochat.data.sources import REGISTRY


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    return build_fake_hub(tmp_path_factory.mktemp("fakehub"), train_shards=2)


@pytest.fixture
def hub(hub_root, monkeypatch):
    monkeypatch.delenv("PICOCHAT_MIRROR", raising=False)
    monkeypatch.delenv("PICOCHAT_URL_PREFIX", raising=False)
    with serve_fake_hub(hub_root) as h:
        yield h


def _read_everything(home: str, mirror: str) -> None:
    """The tasks and CORE's loader read what was downloaded."""
    from picochat.eval import core
    from picochat.tasks.common import describe
    from picochat.tasks.registry import make_mixture, make_task

    mid = make_mixture("smoltalk:train, mmlu:auxiliary_train, arc_easy:train, arc_challenge:validation, "
                       "simplespelling:train:50, spellingbee:test:20, gsm8k:train", home=home, mirror=mirror)
    counts = describe(mid)["counts"]
    assert set(counts) == {"smoltalk", "mmlu", "arc_easy", "arc_challenge", "simplespelling", "spellingbee", "gsm8k"}
    assert counts["smoltalk"] == 4 * 40 and counts["mmlu"] == 80 and counts["arc_easy"] == 20
    for i in range(len(mid)):
        assert mid[i]["messages"][-1]["role"] == "assistant"
    assert len(make_task("smoltalk:test", home=home, mirror=mirror)) == 40
    assert len(make_task("mmlu:auxiliary_train", home=home, mirror=mirror)) == 80
    assert make_task("arc_easy:train", home=home, mirror=mirror)[0]["answer"] in "ABCD"
    assert len(make_task("humaneval", home=home, mirror=mirror)) > 0
    bundle = core.bundle_dir(mirror, home)
    specs = core.load_specs(bundle)
    assert len(specs) == 22 and all((bundle / "eval_data" / s.dataset_uri).is_file() for s in specs)
    assert {"hellaswag", "squad", "coqa"} <= {s.label for s in specs}
    for spec in specs:
        assert len(core.load_examples(bundle, spec)) == 12


def test_every_source_downloads_through_a_url_mirror(hub, tmp_path):
    home = str(tmp_path / "home")
    for src in REGISTRY.values():
        if src.num_shards:
            paths = download.download_shards(src.name, [0, 1], home=home, mirror=hub.mirror, progress=False)
            assert len(paths) == 3
        elif src.name != "synthetic" and any(f.url for f in src.files.values()):
            for split in src.splits:
                assert download.fetch_split(src.name, split, home=home, mirror=hub.mirror)
    climb = open_corpus("climbmix", "train", home=home)
    assert climb.num_chunks() == 2 * 3  # two shards of 2148 documents: row groups of 1024, 1024, 100
    assert len(climb.chunk(0)) == 1024 and len(list(iter_documents("climbmix", "val", home=home))) == 2148
    _read_everything(home, hub.mirror)


def test_real_url_patterns_rewritten_to_the_local_server(hub, tmp_path, monkeypatch):
    """No mirror: the registered URLs themselves, host and path kept, served from 127.0.0.1."""
    monkeypatch.setenv("PICOCHAT_URL_PREFIX", hub.url_prefix)
    home = str(tmp_path / "home")
    for name in ("d20", "demo"):
        download_preset(PRESETS[name], shards=[0], home=home, log=lambda s: None)
    needs = preset_needs(PRESETS["d20"])
    assert all(need_present(n, home) for n in needs), [n for n in needs if not need_present(n, home)]
    # the published files, not the mirror's converted ones, are what the tasks found
    assert (Path(home) / "data" / "mmlu" / "all" / "test-00000-of-00001.parquet").is_file()
    assert (Path(home) / "data" / "words" / "words_alpha.txt").read_bytes().endswith(b"\r\n")
    _read_everything(home, "")


def test_cli_download_and_list(hub, tmp_path, capsys):
    from picochat import cli

    home = str(tmp_path / "home")
    for name in ("smoltalk", "core", "words"):
        with pytest.raises(SystemExit) as e:
            cli.main(["data", "download", name, "--home", home, "--mirror", hub.mirror])
        assert e.value.code == 0
    assert "core: bundle unpacked in" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "download", "d12", "--shards", "0", "--home", home, "--mirror", hub.mirror])
    assert e.value.code == 0
    with pytest.raises(SystemExit):
        cli.main(["data", "list", "--home", home, "--mirror", hub.mirror])
    out = capsys.readouterr().out
    assert "preset d12 (ready)" in out and "preset d32 (ready)" in out and "preset demo (ready)" in out
    assert "mmlu/auxiliary_train" in out and "22/22 tasks" in out and "MISSING" not in out


# ---------------------------------------------------------------------------------------- bad files


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


def _serve_bad(hub_root: Path, tmp_path: Path, rel: str, data: bytes) -> Path:
    import shutil

    root = tmp_path / "badhub"
    shutil.copytree(hub_root / "mirror", root / "mirror")
    (root / "mirror" / rel).write_bytes(data)
    return root


BAD = [
    ("smoltalk", "test", "smoltalk/data/test-00000-of-00001.parquet",
     lambda: _parquet(pa.table({"text": ["hi"]})), r"has no column 'messages'"),
    ("smoltalk", "test", "smoltalk/data/test-00000-of-00001.parquet",
     lambda: _parquet(pa.table({"messages": [["a", "b"]]})), r"column 'messages' of type list<.*string>, "
     r"expected list<struct<content: string, role: string>>"),
    ("mmlu", "auxiliary_train", "mmlu/all/auxiliary_train-00000-of-00001.parquet",
     lambda: _parquet(pa.table({"question": ["q"]}))[:-30], r"footer is missing or damaged|not a readable parquet"),
    ("arc", "ARC-Easy/train", "arc/ARC-Easy/train-00000-of-00001.parquet",
     lambda: b"<html>rate limited</html>", r"footer is missing or damaged|not a readable parquet"),
    ("words", "all", "words/words_alpha.txt", lambda: b"<!DOCTYPE html>\r\n", r"does not match"),
    ("core", "bundle", "core/eval_bundle.zip",
     lambda: _zip({"eval_bundle/core.yaml": "icl_tasks: []\n", "eval_bundle/eval_meta_data.csv": "x\n",
                   "eval_bundle/../../evil.sh": "rm -rf /"}), r"climbs out of its folder"),
    ("core", "bundle", "core/eval_bundle.zip",
     lambda: _zip({"/etc/eval_bundle/core.yaml": "x"}), r"absolute"),
    ("core", "bundle", "core/eval_bundle.zip",
     lambda: _zip({"eval_bundle/core.yaml": "icl_tasks:\n- {dataset_uri: a/b.jsonl}\n",
                   "eval_bundle/eval_meta_data.csv": "x\n"}), r"lacks 1 file\(s\) that core.yaml lists"),
]


@pytest.mark.parametrize("name,split,rel,make,message", BAD)
def test_bad_files_are_refused_in_one_sentence(hub_root, tmp_path, monkeypatch, name, split, rel, make, message):
    monkeypatch.delenv("PICOCHAT_URL_PREFIX", raising=False)
    root = _serve_bad(hub_root, tmp_path, rel, make())
    home = tmp_path / "home"
    with serve_fake_hub(root) as bad:
        with pytest.raises(UserError, match=message) as e:
            download.fetch_split(name, split, home=str(home), mirror=bad.mirror, retries=1, backoff=0.01)
    text = str(e.value)
    assert "\n" not in text and Path(rel).name in text or "from http" in text
    assert not list(home.rglob(Path(rel).name)) and not list(home.rglob("core_icl"))  # nothing saved
    # the same file in a mirror *folder* is refused in place (and left alone)
    with pytest.raises(UserError, match=message):
        download.fetch_split(name, split, home=str(home), mirror=str(root / "mirror"))
    assert (root / "mirror" / rel).is_file()


def test_symlink_member_is_refused(tmp_path):
    from picochat.data.formats import unsafe_member

    info = zipfile.ZipInfo("eval_bundle/eval_data/link.jsonl")
    info.external_attr = (0o120777 << 16)
    assert "symbolic link" in unsafe_member(info)


def test_old_mmlu_layout_and_mirror_names_still_read(hub_root, tmp_path, monkeypatch):
    """cais/mmlu's older auxiliary_train wraps rows in a `train` struct; shared/data's jsonl names work."""
    import json

    from picochat.tasks.mmlu import MMLU

    monkeypatch.delenv("PICOCHAT_URL_PREFIX", raising=False)
    flat = pq.read_table(hub_root / "mirror" / "mmlu" / "all" / "auxiliary_train-00000-of-00001.parquet")
    rows = pa.StructArray.from_arrays([c.combine_chunks() for c in flat.columns], flat.column_names)
    wrapped = pa.Table.from_arrays([rows], ["train"])
    mirror = tmp_path / "m"
    (mirror / "mmlu" / "all").mkdir(parents=True)
    pq.write_table(wrapped, mirror / "mmlu" / "all" / "auxiliary_train-00000-of-00001.parquet")
    task = MMLU("auxiliary_train", mirror=str(mirror), home=str(tmp_path))
    assert len(task) == 80 and task[0]["answer"] in "ABCD"
    (mirror / "arc").mkdir()
    row = {"question": "q?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "B"}
    (mirror / "arc" / "ARC-Easy-Test.jsonl").write_text(json.dumps(row) + "\n")
    from picochat.tasks.arc import ARC

    assert ARC("ARC-Easy", "test", mirror=str(mirror), home=str(tmp_path))[0]["answer"] == "B"
    with pytest.raises(UserError, match="not in the mirror folder"):
        ARC("ARC-Easy", "train", mirror=str(mirror), home=str(tmp_path))


def test_core_task_table_has_22_tasks():
    assert len(CORE_TASKS) == 22 and len({t[0] for t in CORE_TASKS}) == 22


# ---------------------------------------------------------------------------------------- CORE bundle


def test_core_bundle_unpacks_atomically_replaces_an_older_one_and_wins_over_a_partial_mirror(hub, tmp_path):
    from picochat.eval import core

    home = tmp_path / "home"
    partial = tmp_path / "partial" / "core_icl"  # a mirror folder with 18 of the 22 task files
    with zipfile.ZipFile(hub.root / "mirror" / "core" / "eval_bundle.zip") as z:
        for info in z.infolist():
            rel = info.filename.removeprefix("eval_bundle/")
            if rel and not info.is_dir() and not any(k in rel for k in ("hellaswag", "squad", "coqa")):
                (partial / rel).parent.mkdir(parents=True, exist_ok=True)
                (partial / rel).write_bytes(z.read(info))
    assert core.bundle_dir(str(partial.parent), str(home)) == partial  # nothing else here: CORE-18
    stale = home / "data" / "core_icl"
    stale.mkdir(parents=True)
    (stale / "core.yaml").write_text("icl_tasks: []\n")  # an older, broken unpack
    target = download.fetch_unpacked("core", home=str(home), mirror=hub.mirror)
    assert target == stale and len(core.load_specs(target)) == 22 and (target / ".unpacked-from").is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".core_icl")]  # no temp folders left
    mtime = (target / "core.yaml").stat().st_mtime_ns
    assert download.fetch_unpacked("core", home=str(home), mirror=hub.mirror) == target
    assert (target / "core.yaml").stat().st_mtime_ns == mtime  # same archive: not unpacked again
    assert core.bundle_dir(str(partial.parent), str(home)) == target  # the complete bundle wins


def test_a_member_that_inflates_past_its_header_is_refused(tmp_path):
    from picochat.data.download import _unpack_member

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("eval_bundle/x.jsonl", "0" * 100_000)
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("eval_bundle/x.jsonl")
        info.file_size = 1000  # what a bomb's header would claim
        with pytest.raises(zipfile.BadZipFile):
            _unpack_member(z, info, tmp_path / "out" / "x.jsonl")


def test_ranks_fetching_one_file_download_it_once(hub, tmp_path):
    """Threads (like torchrun ranks) asking for the same file wait on its lock: one GET, one good file."""
    from concurrent.futures import ThreadPoolExecutor

    home = str(tmp_path / "home")
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: download.fetch_split("mmlu", "auxiliary_train", home=home,
                                                             mirror=hub.mirror), range(4)))
    assert len({tuple(p) for p in paths}) == 1
    assert hub.requests.count("/mirror/mmlu/all/auxiliary_train-00000-of-00001.parquet") == 1
    assert paths[0][0].read_bytes() == (hub.root / "mirror" / "mmlu" / "all" /
                                        "auxiliary_train-00000-of-00001.parquet").read_bytes()


def test_a_shard_without_the_text_column_is_named(tmp_path):
    folder = tmp_path / "data" / "climbmix"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"tokens": [[1, 2]]}), folder / "shard_00000.parquet")
    with pytest.raises(UserError, match="has no text column 'text'"):
        open_corpus("climbmix", "train", home=str(tmp_path), mirror="")
