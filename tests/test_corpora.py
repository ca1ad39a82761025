import dataclasses
import hashlib
import http.server
import io
import tarfile
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


def _mirror_corpus(tmp_path, monkeypatch):
    """`data get shakespeare` served from a local mirror holding BODY."""
    monkeypatch.setitem(corpora.CORPORA, "shakespeare",
                        corpora.Corpus("shakespeare", "shakespeare.txt", "tinyshakespeare.txt",
                                       "http://127.0.0.1:9/unused", SHA, "test"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tinyshakespeare.txt").write_bytes(BODY)
    monkeypatch.setenv(corpora.MIRROR_ENV, str(mirror))
    return tmp_path / "data"


def test_data_get_refuses_to_replace_a_copy_that_does_not_match_without_force(tmp_path, monkeypatch):
    from conftest import one_error_line

    data = _mirror_corpus(tmp_path, monkeypatch)
    data.mkdir()
    edited = b"my own edit of the play\n"
    (data / "shakespeare.txt").write_bytes(edited)
    args = ["data", "get", "shakespeare", "--data-dir", str(data)]
    one_error_line(CliRunner().invoke(main, args), f"{data / 'shakespeare.txt'} does not match the sha256",
                   "--force")
    assert (data / "shakespeare.txt").read_bytes() == edited  # someone's text is never lost silently
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert f"{data / 'shakespeare.txt'} did not match its sha256; replaced with a verified copy" in forced.stderr
    assert (data / "shakespeare.txt").read_bytes() == BODY
    kept = CliRunner().invoke(main, args)  # a verified copy is kept, and nothing is said about replacing
    assert kept.exit_code == 0 and "replaced" not in kept.output


def test_data_get_writes_the_corpus_with_the_usual_file_mode(tmp_path, monkeypatch):
    import os
    import stat

    data = _mirror_corpus(tmp_path, monkeypatch)
    umask = os.umask(0o022)
    try:
        assert CliRunner().invoke(main, ["data", "get", "shakespeare", "--data-dir", str(data)]).exit_code == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((data / "shakespeare.txt").stat().st_mode) == 0o644


# ----------------------------------------------------------------------------------------------
# Paul Graham essays: built from an archive of the source repository, then checked against the sha256

PG_CSV = (
    "essay_id,title,partial_link,full_link,outlinks,word_count\n"
    "0,Cities and Ambition,cities.html,http://paulgraham.com/cities.html,[],258\n"
    "1,\"Maker's Schedule, Manager's Schedule \",makersschedule.html,http://paulgraham.com/makersschedule.html,"
    "\"['a.html', 'b.html']\",1159\n"
    "2,Chapter 1 of Ansi Common Lisp,https://example.com/acl1.txt?t=1,https://example.com/acl1.txt?t=1,[],2459\n"
    "3,What Languages Fix,fix.html,http://paulgraham.com/fix.html,[],312\n"
)
# Shaped like the repository's txt/ files: paragraphs end in " \n\n", banners and page-source comments kept.
PG_FILES = {
    "csv/full_df.csv": PG_CSV,
    "txt/cities.txt": "Want to start a startup? Get funded by Y Combinator.   Watch how this essay was written.   "
                      "May 2008 \n\n<!--  \"In Boston they ask, How much does he know?\"  --> Great cities attract"
                      "\xa0ambitious people. \n\n \n\n \n\n Thanks to A and B for reading drafts of this. \n\n"
                      " Comment on this essay.",
    "txt/makersschedule.txt": "July 2009 \n\nOne reason programmers dislike\r meetings. \n\n<!-- a cut\n\nparagraph -->"
                              " Last  line. \n\n \n\nRelated: \n\nJapanese Translation",
    "txt/fix.txt": "Kevin suggested a way — a good one. \n\n Algol: too low-level. \n\nC#: Java is controlled by Sun. "
                   "<!-- Javascript: Java is scary. --> ",
    "txt/common_lisp_1.txt": "(defun foo ())",
}
PG_EXPECTED = (
    "Cities and Ambition\n\nMay 2008\n\nGreat cities attract ambitious people.\n\n"
    "Thanks to A and B for reading drafts of this.\n\n\n"
    "Maker's Schedule, Manager's Schedule\n\nJuly 2009\n\nOne reason programmers dislike\nmeetings.\n\nLast  line.\n\n\n"
    "What Languages Fix\n\nKevin suggested a way — a good one.\n\nAlgol: too low-level.\n\nC#: Java is controlled by Sun.\n"
).encode()
PG_SHA = hashlib.sha256(PG_EXPECTED).hexdigest()


def repo_archive(files: dict[str, str]) -> bytes:
    """A .tar.gz laid out like GitHub's archive of a commit: everything under one top folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"paul_graham_corpus-6742ddc/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def serve():
    """serve({path: body}) starts an HTTP server on 127.0.0.1 and returns its base URL."""
    servers = []

    def start(routes: dict[str, bytes]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path in routes:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(routes[self.path])))
                    self.end_headers()
                    self.wfile.write(routes[self.path])
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def paulgraham_at(monkeypatch):
    """Point the paulgraham entry at a test archive URL and hash; no mirror from the environment."""
    monkeypatch.delenv(corpora.MIRROR_ENV, raising=False)

    def point(url: str, sha256: str = PG_SHA) -> None:
        monkeypatch.setitem(corpora.CORPORA, "paulgraham",
                            dataclasses.replace(corpora.CORPORA["paulgraham"], url=url, sha256=sha256))

    return point


def test_clean_essay_applies_the_documented_rules():
    raw = ("Want to start a startup?  Get funded by Y Combinator.   Watch how this essay was written on Etherpad."
           "   Like to build things? Try Hacker News.   June 2009 \n\n<!-- a draft\n\nthat spans lines --> "
           "Text\xa0with a non-breaking space &amp; an entity.<!-- x --> \n\n \n\n \n\n  Related:  \n\n"
           "Some Technical DetailsJapanese TranslationMicrosoft finally agreesGates Email\n\nLast\rline \n\n"
           " Comment on this essay. \n\n ")
    assert corpora.clean_essay(raw) == ("Like to build things? Try Hacker News.   June 2009\n\n"
                                        "Text with a non-breaking space &amp; an entity.\n\nLast\nline")


def test_paulgraham_is_built_from_the_repository_archive(serve, paulgraham_at, tmp_path):
    base = serve({"/repo.tar.gz": repo_archive(PG_FILES)})
    paulgraham_at(f"{base}/repo.tar.gz")
    out = tmp_path / "data"
    result = CliRunner().invoke(main, ["data", "get", "paulgraham", "--data-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "paulgraham.txt").read_bytes() == PG_EXPECTED
    assert [p.name for p in out.iterdir()] == ["paulgraham.txt"]  # the downloaded archive is gone


def test_paulgraham_wrong_sha256_leaves_no_file_behind(serve, paulgraham_at, tmp_path):
    base = serve({"/repo.tar.gz": repo_archive(PG_FILES)})
    paulgraham_at(f"{base}/repo.tar.gz", sha256="0" * 64)
    out = tmp_path / "data"
    result = CliRunner().invoke(main, ["data", "get", "paulgraham", "--data-dir", str(out)])
    assert result.exit_code == 1
    assert "sha256 mismatch" in result.output and "nothing was saved" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_paulgraham_archive_without_an_essay_is_a_clear_error(serve, paulgraham_at, tmp_path):
    files = {name: text for name, text in PG_FILES.items() if name != "txt/fix.txt"}
    base = serve({"/repo.tar.gz": repo_archive(files), "/page.html": b"<html>not an archive</html>"})
    paulgraham_at(f"{base}/repo.tar.gz")
    with pytest.raises(CharRNNError, match="archive has no txt/fix.txt"):
        corpora.get("paulgraham", tmp_path / "data")
    with pytest.raises(CharRNNError, match="not a readable tar archive"):
        corpora.get("paulgraham", tmp_path / "data", url=f"{base}/page.html")
    assert list((tmp_path / "data").iterdir()) == []


def test_paulgraham_mirror_copies_without_downloading(paulgraham_at, tmp_path):
    paulgraham_at("http://127.0.0.1:9/unreachable.tar.gz")  # would fail if it were fetched
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "paulgraham.txt").write_bytes(PG_EXPECTED)
    path = corpora.get("paulgraham", tmp_path / "data", mirror=mirror)
    assert path.read_bytes() == PG_EXPECTED
