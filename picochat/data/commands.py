"""`picochat data list|download|prepare`: what sources exist, fetch them, check they are ready."""

from __future__ import annotations

from picochat.common.errors import UserError
from picochat.common.log import human
from picochat.data import download
from picochat.data.corpus import open_corpus
from picochat.data.requirements import (
    Need,
    check_preset,
    core_bundle_tasks,
    download_preset,
    need_present,
    preset_needs,
)
from picochat.data.sources import REGISTRY, Source, get_source, local_folders


def _status(src: Source, home: str, mirror: str) -> str:
    """Where the source's files are now: embedded, in the mirror, downloaded, or missing."""
    if src.name == "synthetic":
        return "embedded"
    if src.name == "core":
        tasks = core_bundle_tasks(home, mirror)
        return f"unpacked: {tasks}" if tasks else "not here"
    folders = local_folders(src, home, mirror)
    for folder, label in zip(folders, ["mirror", "downloaded"][-len(folders):]):
        if src.num_shards:
            n = len(list(folder.glob("shard_?????.parquet"))) if folder.is_dir() else 0
            if n:
                return f"{label}: {n} shard(s)"
        else:
            have = [f for f in src.files if (folder / f).is_file()]
            if have:
                return f"{label}: {len(have)}/{len(src.files)} file(s)"
    return "not here"


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "") -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _preset_rows(needs: list[Need], home: str, mirror: str) -> list[tuple[str, ...]]:
    rows = []
    for n in needs:
        here = need_present(n, home, mirror)
        state = here or ("optional, not here" if n.optional else "MISSING")
        rows.append((f"{n.source}/{n.split}", state, n.used_by))
    return rows


def list_main(cfg) -> None:
    """`picochat data list`: every registered source, then what each preset needs and whether it is here."""
    from picochat.config import PRESETS

    home, mirror = cfg.run.home, cfg.run.mirror
    _table(("source", "kind", "license", "size", "here"),
           [(s.name, s.kind, s.license, s.size, _status(s, home, mirror)) for s in REGISTRY.values()])
    for preset in PRESETS.values():
        try:
            needs = check_preset(preset)
        except UserError as e:  # still list what it needs, with the problem
            print(f"\npreset {preset.name}: {e}")
            needs = preset_needs(preset)
        else:
            missing = sum(1 for n in needs if not n.optional and not need_present(n, home, mirror))
            ready = "ready" if not missing else f"{missing} missing: `picochat data download {preset.name}`"
            print(f"\npreset {preset.name} ({ready})")
        _table(("needs", "here", "named by"), _preset_rows(needs, home, mirror), indent="  ")
    if cfg.args.verbose:
        for s in REGISTRY.values():
            print(f"\n{s.name}: {s.description}")
            if s.url_pattern:
                print(f"  shards 0..{s.num_shards - 1}: {s.url_pattern}")
            for name, spec in s.files.items():
                print(f"  {s.mirror_dir}/{name}: {spec.url or spec.note}")
                if spec.url and spec.note:
                    print(f"    ({spec.note})")


def download_main(cfg) -> None:
    """`picochat data download NAME [--shards 0-23]`: fetch a source's files (verified, resumable);
    NAME may also be a preset, to fetch everything that preset needs."""
    from picochat.config import PRESETS

    home, mirror = cfg.run.home, cfg.run.mirror
    if cfg.args.source in PRESETS and cfg.args.source not in REGISTRY:
        download_preset(PRESETS[cfg.args.source], shards=download.parse_shards(cfg.args.shards), home=home,
                        mirror=mirror, workers=cfg.args.workers)
        print(f"preset {cfg.args.source}: every dataset it needs is here")
        return
    src = get_source(cfg.args.source)
    if src.name == "synthetic":
        print("synthetic is generated on the fly; nothing to download")
        return
    if src.num_shards:
        shards = download.parse_shards(cfg.args.shards)
        paths = download.download_shards(src.name, shards, home=home, mirror=mirror, workers=cfg.args.workers)
    else:
        paths, missing = _download_splits(src, home, mirror)
        if not paths:
            raise UserError(missing[0] if len(missing) == 1 else
                            f"none of the {len(missing)} splits of {src.name} is available; first: {missing[0]}")
        for m in missing:
            print(f"skipped: {m}")
    if src.name == "core":
        print(f"core: bundle unpacked in {download.fetch_unpacked('core', home=home, mirror=mirror)}")
    total = sum(p.stat().st_size for p in paths)
    print(f"{src.name}: {len(paths)} file(s), {human(total)}B ready under {paths[0].parent}")


def _download_splits(src: Source, home: str, mirror: str) -> tuple[list, list[str]]:
    """Every split of a file source (its first alternative that a place serves); (paths, problems)."""
    paths, missing = [], []
    for split in src.splits:
        try:
            paths += download.fetch_split(src.name, split, home=home, mirror=mirror)
        except download.Unavailable as e:
            missing.append(str(e))
    return paths, missing


def prepare_main(cfg) -> None:
    """`picochat data prepare SOURCE`: make sure both splits open and read, and summarise them."""
    src = get_source(cfg.args.source)
    if src.kind != "pretrain":
        raise UserError(f"'{src.name}' is a {src.kind} dataset; `picochat data download {src.name}` is all it needs")
    first = ""
    for split in ("train", "val"):
        corpus = open_corpus(src.name, split, home=cfg.run.home, mirror=cfg.run.mirror)
        n = corpus.num_chunks()
        sample = range(min(n, max(1, cfg.args.sample_chunks)))
        docs = [d for i in sample for d in corpus.chunk(i)]
        if not docs:
            raise UserError(f"{src.name}/{split} has no documents; download it again")
        first = first or docs[0]
        chars = sum(map(len, docs)) / len(docs)
        per_chunk = len(docs) / len(sample)
        print(f"{src.name}/{split}: {n} chunks, ~{human(n * per_chunk)} documents of ~{chars:.0f} characters "
              f"(~{human(n * per_chunk * chars)} characters; {len(sample)} chunk(s) sampled)")
    print(f"first training document:\n  {first[:300]}")
