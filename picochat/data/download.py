"""Downloads (placeholder until the full downloader lands): mirror folders only."""

from __future__ import annotations

from pathlib import Path

from picochat.common.errors import UserError
from picochat.common.paths import mirror_location


def fetch(name: str, file: str, *, home: str = "", mirror: str = "") -> Path:
    from picochat.data.sources import get_source

    src = get_source(name)
    mirror = mirror_location(mirror)
    if mirror and "://" not in mirror:
        path = Path(mirror) / src.mirror_dir / file
        if path.is_file():
            return path
    raise UserError(f"{name}/{file} is not available; set --mirror or PICOCHAT_MIRROR to a folder that has "
                    f"{src.mirror_dir}/{file}")
