import hashlib
import http.server
import threading

import pytest
from click.testing import CliRunner

from charrnn import corpora
from charrnn.cli import main
from charrnn.errors import CharRNNError

BODY = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/input.txt":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_sha256(server, tmp_path):
    path = corpora.download(f"{server}/input.txt", tmp_path / "shakespeare.txt", SHA)
    assert path.read_bytes() == BODY


def test_wrong_sha256_leaves_no_file_behind(server, tmp_path):
    with pytest.raises(CharRNNError, match="sha256 mismatch"):
        corpora.download(f"{server}/input.txt", tmp_path / "shakespeare.txt", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_one_clear_line(server, tmp_path):
    with pytest.raises(CharRNNError, match="HTTP 404"):
        corpora.download(f"{server}/missing.txt", tmp_path / "x.txt", SHA)
    assert list(tmp_path.iterdir()) == []


def test_cli_data_get_from_url_and_from_mirror(server, tmp_path, monkeypatch):
    monkeypatch.delenv(corpora.MIRROR_ENV, raising=False)
    monkeypatch.setitem(corpora.CORPORA, "shakespeare",
                        corpora.Corpus("shakespeare", "shakespeare.txt", "tinyshakespeare.txt",
                                       f"{server}/input.txt", SHA, "test"))
    result = CliRunner().invoke(main, ["data", "get", "shakespeare", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "shakespeare.txt").read_bytes() == BODY
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tinyshakespeare.txt").write_bytes(BODY)
    monkeypatch.setenv(corpora.MIRROR_ENV, str(mirror))
    out = tmp_path / "data2"
    result = CliRunner().invoke(main, ["data", "get", "shakespeare", "--data-dir", str(out)])
    assert result.exit_code == 0 and (out / "shakespeare.txt").read_bytes() == BODY
    (mirror / "tinyshakespeare.txt").write_bytes(BODY + b"tampered")
    result = CliRunner().invoke(main, ["data", "get", "shakespeare", "--data-dir", str(tmp_path / "d3")])
    assert result.exit_code == 1 and "sha256 mismatch" in result.output
    assert not (tmp_path / "d3" / "shakespeare.txt").exists()
