"""download() against a local HTTP server on 127.0.0.1: never the internet."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from defectnas.data import download

FILES = {"query.csv": b"query_id\tquery\n0\tchair\n", "product.csv": b"product_id\tproduct_name\n1\tchair\n" * 50,
         "label.csv": b"id\tquery_id\tproduct_id\tlabel\n0\t0\t1\tExact\n"}


class Server:
    """Serves FILES; names in ``missing`` give 404, in ``truncated`` close after half the body."""

    def __init__(self) -> None:
        self.files = dict(FILES)
        self.missing: set[str] = set()
        self.truncated: set[str] = set()
        self.gets: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _head(self) -> bytes | None:
                name = self.path.rsplit("/", 1)[-1]
                if name in server.missing or name not in server.files:
                    self.send_error(404)
                    return None
                body = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def do_HEAD(self) -> None:
                self._head()

            def do_GET(self) -> None:
                server.gets.append(self.path.rsplit("/", 1)[-1])
                body = self._head()
                if body is None:
                    return
                if self.path.rsplit("/", 1)[-1] in server.truncated:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dataset/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = Server()
    yield s
    s.close()


def test_downloads_every_file(server: Server, tmp_path: Path):
    paths = download("wands", tmp_path / "wands", base_url=server.url, quiet=True, timeout=5)
    assert [p.name for p in paths] == ["query.csv", "product.csv", "label.csv"]
    assert all(p.read_bytes() == FILES[p.name] for p in paths)
    assert sorted(p.name for p in (tmp_path / "wands").iterdir()) == ["label.csv", "product.csv", "query.csv"]


def test_skips_files_already_present_with_the_same_size(server: Server, tmp_path: Path):
    download("wands", tmp_path, base_url=server.url, quiet=True, timeout=5)
    (tmp_path / "label.csv").write_bytes(b"short")  # wrong size: fetched again
    server.gets.clear()
    download("wands", tmp_path, base_url=server.url, quiet=True, timeout=5)
    assert server.gets == ["label.csv"]
    assert (tmp_path / "label.csv").read_bytes() == FILES["label.csv"]


@pytest.mark.parametrize("failure", ["missing", "truncated"])
def test_failed_download_leaves_no_partial_file(server: Server, tmp_path: Path, raises_data_error, failure: str):
    getattr(server, failure).add("product.csv")
    url = server.url + "product.csv"
    reason = "HTTP 404" if failure == "missing" else "connection closed after"
    raises_data_error(download, "wands", tmp_path, base_url=server.url, quiet=True, timeout=5,
                      contains=(url, reason, "manually", "--data"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["query.csv"]  # no product.csv, no .part file


def test_unreachable_server_and_unknown_dataset(tmp_path: Path, raises_data_error, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    raises_data_error(download, "esci", tmp_path, base_url=f"http://127.0.0.1:{port}/", quiet=True, timeout=5,
                      contains=(f"http://127.0.0.1:{port}/shopping_queries_dataset_examples.parquet", "--data"))
    assert list(tmp_path.iterdir()) == []
    raises_data_error(download, "imagenet", tmp_path, contains=("unknown dataset 'imagenet'", "esci", "wands"))
