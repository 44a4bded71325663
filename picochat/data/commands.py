"""`picochat data list|download|prepare`: what sources exist, fetch them, check they are ready."""

from __future__ import annotations

from pathlib import Path

from picochat.common.errors import UserError
from picochat.common.log import human
from picochat.common.paths import data_dir, mirror_location
from picochat.data import download
from picochat.data.sources import REGISTRY, Source, get_source, open_corpus


def _status(src: Source, home: str, mirror: str) -> str:
    """Where the source's files are now: embedded, in the mirror, downloaded, or missing."""
    if src.name == "synthetic":
        return "embedded"
    mirror = mirror_location(mirror)
    places = [("mirror", Path(mirror) / src.mirror_dir)] if mirror and "://" not in mirror else []
    places.append(("downloaded", data_dir(home) / src.mirror_dir))
    for label, folder in places:
        if src.num_shards:
            n = len(list(folder.glob("shard_?????.parquet"))) if folder.is_dir() else 0
            if n:
                return f"{label}: {n} shard(s)"
        else:
            have = [f for f in src.files if (folder / f).is_file()]
            if have:
                return f"{label}: {len(have)}/{len(src.files)} file(s)"
    return "not here"


def list_main(cfg) -> None:
    """`picochat data list`: every registered source with license, size and local status."""
    rows = [(s.name, s.kind, s.license, s.size, _status(s, cfg.run.home, cfg.run.mirror)) for s in REGISTRY.values()]
    head = ("source", "kind", "license", "size", "here")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if cfg.args.verbose:
        for s in REGISTRY.values():
            print(f"\n{s.name}: {s.description}")
            if s.url_pattern:
                print(f"  shards 0..{s.num_shards - 1}: {s.url_pattern}")
            for name, spec in s.files.items():
                print(f"  {s.mirror_dir}/{name}: {spec.url or spec.note}")


def download_main(cfg) -> None:
    """`picochat data download SOURCE [--shards 0-23]`: fetch a source's files (verified, resumable)."""
    src = get_source(cfg.args.source)
    home, mirror = cfg.run.home, cfg.run.mirror
    if src.name == "synthetic":
        print("synthetic is generated on the fly; nothing to download")
        return
    if src.num_shards:
        shards = download.parse_shards(cfg.args.shards)
        paths = download.download_shards(src.name, shards, home=home, mirror=mirror, workers=cfg.args.workers)
    else:
        paths, missing = [], []
        for file in src.files:
            try:
                paths.append(download.fetch(src.name, file, home=home, mirror=mirror))
            except UserError as e:
                missing.append(str(e))
        if not paths:
            raise UserError(" ".join(missing))
        for m in missing:
            print(f"skipped: {m}")
    total = sum(p.stat().st_size for p in paths)
    print(f"{src.name}: {len(paths)} file(s), {human(total)}B ready under {paths[0].parent}")


def prepare_main(cfg) -> None:
    """`picochat data prepare SOURCE`: make sure both splits open and read, and summarise them."""
    src = get_source(cfg.args.source)
    if src.kind != "pretrain":
        raise UserError(f"'{src.name}' is a task dataset; `picochat data download {src.name}` is all it needs")
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
