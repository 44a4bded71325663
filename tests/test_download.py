"""Downloads against a real threaded HTTP server on loopback, with injected faults."""

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from picochat.common.errors import UserError
from picochat.data.corpus import iter_documents, open_corpus
from picochat.data.download import download_file, download_shards, fetch, parquet_ok, parse_shards
from picochat.data.sources import REGISTRY

VAL = REGISTRY["fineweb-edu"].num_shards - 1


class Server:
    """Serves files from a dict path -> bytes, honours Range, and plays scripted faults per path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}  # path -> faults to play, in order: "drop", "500"
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.log.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    return self.send_error(404)
                fault = outer.faults.get(self.path, [None]).pop(0) if outer.faults.get(self.path) else None
                if fault == "500":
                    return self.send_error(500)
                start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if fault == "drop":  # promise the whole body, send a third, hang up
                    self.wfile.write(body[start:start + (len(body) - start) // 3])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def shard_bytes(tmp_path: Path, index: int, rows: int = 300) -> bytes:
    texts = [f"shard {index} document {i}: " + "lorem ipsum " * (i % 17 + 1) for i in range(rows)]
    path = tmp_path / f"src_{index}.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=64)
    return path.read_bytes()


def serve_shards(server, tmp_path, indices):
    for i in indices:
        server.files[f"/fineweb-edu/shard_{i:05d}.parquet"] = shard_bytes(tmp_path, i)


def shard_path(home, i):
    return Path(home) / "data" / "fineweb-edu" / f"shard_{i:05d}.parquet"


def get(server, home, shards, **kw):
    return download_shards("fineweb-edu", shards, home=str(home), mirror=server.url, workers=4,
                           retries=kw.pop("retries", 3), backoff=0.01, progress=False, **kw)


def test_parallel_download_then_read_as_corpus(server, tmp_path):
    serve_shards(server, tmp_path, [0, 1, 2, VAL])
    paths = get(server, tmp_path / "home", parse_shards("0-2"))
    assert [p.name for p in paths] == [f"shard_{i:05d}.parquet" for i in (0, 1, 2, VAL)]
    for i in (0, 1, 2, VAL):
        assert shard_path(tmp_path / "home", i).read_bytes() == server.files[f"/fineweb-edu/shard_{i:05d}.parquet"]
    train = list(iter_documents("fineweb-edu", "train", home=str(tmp_path / "home")))
    val = list(iter_documents("fineweb-edu", "val", home=str(tmp_path / "home")))
    assert len(train) == 900 and train[0].startswith("shard 0 document 0:") and train[-1].startswith("shard 2 ")
    assert len(val) == 300 and all(t.startswith(f"shard {VAL} ") for t in val)
    assert open_corpus("fineweb-edu", "train", home=str(tmp_path / "home")).num_chunks() == 3 * 5
    assert not list((tmp_path / "home" / "data" / "fineweb-edu").glob("*.part"))


def test_dropped_connection_resumes_with_range(server, tmp_path):
    serve_shards(server, tmp_path, [0, VAL])
    server.faults["/fineweb-edu/shard_00000.parquet"] = ["drop", "drop"]
    get(server, tmp_path, [0])
    requests = [r for p, r in server.log if p.endswith("shard_00000.parquet")]
    assert len(requests) == 3 and requests[0] is None
    assert requests[1] and requests[2] and int(requests[2][6:-1]) > int(requests[1][6:-1]) > 0
    assert shard_path(tmp_path, 0).read_bytes() == server.files["/fineweb-edu/shard_00000.parquet"]


def test_server_error_then_success(server, tmp_path):
    serve_shards(server, tmp_path, [3, VAL])
    server.faults["/fineweb-edu/shard_00003.parquet"] = ["500", "500"]
    get(server, tmp_path, [3])
    assert parquet_ok(shard_path(tmp_path, 3))
    assert sum(p.endswith("shard_00003.parquet") for p, _ in server.log) == 3


def test_persistent_server_error_gives_up_clearly(server, tmp_path):
    serve_shards(server, tmp_path, [3, VAL])
    server.faults["/fineweb-edu/shard_00003.parquet"] = ["500"] * 10
    with pytest.raises(UserError, match="shard_00003.parquet.*HTTP 500"):
        get(server, tmp_path, [3], retries=2)
    assert not shard_path(tmp_path, 3).exists()


def test_missing_shard_is_a_clear_error(server, tmp_path):
    serve_shards(server, tmp_path, [0, VAL])
    with pytest.raises(UserError, match=r"shard_00005\.parquet.*404"):
        get(server, tmp_path, [0, 5])
    assert not shard_path(tmp_path, 5).exists() and shard_path(tmp_path, 0).exists()


def test_truncated_file_on_disk_is_refetched(server, tmp_path):
    serve_shards(server, tmp_path, [0, VAL])
    get(server, tmp_path, [0])
    good = shard_path(tmp_path, 0).read_bytes()
    shard_path(tmp_path, 0).write_bytes(good[: len(good) // 2])  # e.g. a disk filled up during a copy
    with pytest.raises(UserError, match="not a readable parquet"):
        list(iter_documents("fineweb-edu", "train", home=str(tmp_path)))
    n_before = len(server.log)
    get(server, tmp_path, [0])
    assert shard_path(tmp_path, 0).read_bytes() == good
    assert [p for p, _ in server.log[n_before:]] == ["/fineweb-edu/shard_00000.parquet"]  # val shard was fine


def test_sha256_mismatch_is_rejected_and_nothing_is_left(server, tmp_path):
    server.files["/x/data.jsonl"] = b'{"a": 1}\n'
    dest = tmp_path / "x" / "data.jsonl"
    with pytest.raises(UserError, match="sha256"):
        download_file(server.url + "/x/data.jsonl", dest, sha256="0" * 64, retries=1, backoff=0.01)
    assert not dest.exists() and not list(dest.parent.glob("*"))
    good = hashlib.sha256(server.files["/x/data.jsonl"]).hexdigest()
    assert download_file(server.url + "/x/data.jsonl", dest, sha256=good).read_bytes() == b'{"a": 1}\n'


MIRROR = Path(os.environ.get("PICOCHAT_MIRROR", "../shared/data"))


@pytest.mark.skipif(not (MIRROR / "gsm8k" / "test.jsonl").exists(), reason="no data mirror")
def test_fetch_from_mirror_folder_and_mirror_url(server, tmp_path):
    assert fetch("gsm8k", "test.jsonl", home=str(tmp_path), mirror=str(MIRROR)) == MIRROR / "gsm8k" / "test.jsonl"
    server.files["/gsm8k/test.jsonl"] = (MIRROR / "gsm8k" / "test.jsonl").read_bytes()
    path = fetch("gsm8k", "test.jsonl", home=str(tmp_path), mirror=server.url)  # verified against the registry
    assert path == tmp_path / "data" / "gsm8k" / "test.jsonl" and path.read_bytes() == server.files["/gsm8k/test.jsonl"]
    with pytest.raises(UserError, match="not in the mirror folder"):
        fetch("smoltalk", "train.parquet", home=str(tmp_path), mirror=str(MIRROR))


def test_parse_shards():
    assert parse_shards("0-3,7, 2") == [0, 1, 2, 3, 7]
    with pytest.raises(UserError):
        parse_shards("a-b")


def test_cli_download_list_prepare(server, tmp_path, capsys):
    from picochat import cli

    serve_shards(server, tmp_path, [0, 1, VAL])
    home = str(tmp_path / "home")
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "download", "fineweb-edu", "--shards", "0-1", "--workers", "2",
                  "--home", home, "--mirror", server.url])
    assert e.value.code == 0 and shard_path(home, 1).exists()
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "prepare", "fineweb-edu", "--home", home, "--mirror", ""])
    assert e.value.code == 0
    with pytest.raises(SystemExit):
        cli.main(["data", "list", "--home", home, "--mirror", server.url])
    out = capsys.readouterr().out
    assert "fineweb-edu/train: 10 chunks" in out and "downloaded: 3 shard(s)" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "download", "fineweb-edu", "--shards", "9", "--home", home, "--mirror", server.url])
    assert e.value.code == 2 and "shard_00009.parquet" in capsys.readouterr().err
