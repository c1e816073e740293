"""Downloading archives: a local HTTP server serves small Omniglot-shaped zips, and misbehaves."""

import hashlib
import io
import os
import socket
import threading
import urllib.error
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from metajax.data.download import MARKER, OMNIGLOT, Archive, DownloadError, fetch

FOLDERS = ("images_background", "images_evaluation")
IMAGES = [
    f"{alphabet}/{character}/{drawing}.png"
    for alphabet in ("Alphabet_a", "Alphabet_b")
    for character in ("character01", "character02")
    for drawing in ("01", "02")
]


def zip_bytes(members):
    """A zip holding ``members``, a dict from names to bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def omniglot_zip(folder):
    # A PNG signature and the image's name: distinct bytes per file, which nothing decodes here.
    return zip_bytes({f"{folder}/{image}": b"\x89PNG" + image.encode() for image in IMAGES})


def md5(data):
    return hashlib.md5(data).hexdigest()


def files_under(path):
    return sorted(str(file.relative_to(path)) for file in path.rglob("*") if file.is_file())


class Server(ThreadingHTTPServer):
    """Serves ``files[name] = (how, body)``, ``how`` one of "ok", "truncated" and "silent" (no
    answer until ``release`` is set); a name not in ``files`` is a 404. Records the name of each
    request."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = {}
        self.requests = []
        self.release = threading.Event()

    def url(self, name):
        return f"http://127.0.0.1:{self.server_port}/{name}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.lstrip("/")
        self.server.requests.append(name)
        if name not in self.server.files:
            self.send_error(404)
            return
        how, body = self.server.files[name]
        if how == "silent":
            self.server.release.wait(10)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # Truncated: half the announced bytes, then the connection closes.
        self.wfile.write(body[: len(body) // 2] if how == "truncated" else body)
        self.close_connection = True

    def log_message(self, format, *args):
        pass


@pytest.fixture
def server():
    server = Server()
    # A short poll interval: shutdown() waits for the next poll.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def archives(server):
    """The two archives, served correctly, as ``Archive`` records pointing at the server."""
    records = []
    for folder in FOLDERS:
        body = omniglot_zip(folder)
        server.files[f"{folder}.zip"] = ("ok", body)
        records.append(Archive(f"{folder}.zip", server.url(f"{folder}.zip"), md5(body), folder))
    return tuple(records)


def by_hand(dest, *archives):
    urls = " and ".join(archive.url for archive in archives)
    them = "it" if len(archives) == 1 else "them"
    return f"download {urls} by hand and put {them}, unpacked or not, in '{dest}', then "


def test_fetch_unpacks_each_archive_and_returns_its_folder(tmp_path, server, archives):
    dest = tmp_path / "data"
    folders = fetch(dest, archives, progress=False)
    assert folders == [dest / folder for folder in FOLDERS]
    for archive, folder in zip(archives, folders, strict=True):
        assert files_under(folder) == sorted([*IMAGES, MARKER])
        assert (folder / "Alphabet_a/character02/01.png").read_bytes() == (
            b"\x89PNG" + b"Alphabet_a/character02/01.png"
        )
        assert (folder / MARKER).read_text() == archive.md5 + "\n"
    # The archives are kept, and nothing temporary is left.
    assert sorted(os.listdir(dest)) == sorted([*FOLDERS, *(a.name for a in archives)])
    assert server.requests == [a.name for a in archives]


def test_a_second_fetch_downloads_nothing(tmp_path, server, archives):
    fetch(tmp_path, archives, progress=False)
    assert fetch(tmp_path, archives, progress=False) == [tmp_path / folder for folder in FOLDERS]
    assert len(server.requests) == 2


def test_a_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, server, archives):
    wrong = b"not the archive"
    server.files[archives[0].name] = ("ok", wrong)
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, archives, progress=False)
    assert str(raised.value) == (
        f"the download of {archives[0].url} has MD5 {md5(wrong)}, not the expected "
        f"{archives[0].md5}: it was damaged on the way or the file on the server changed; "
        + by_hand(tmp_path, *archives)
        + "call fetch() again"
    )
    assert os.listdir(tmp_path) == []


def test_a_truncated_download_is_refused_and_leaves_nothing(tmp_path, server, archives):
    body = server.files[archives[0].name][1]
    server.files[archives[0].name] = ("truncated", body)
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, archives, progress=False)
    assert str(raised.value).startswith(
        f"the download of {archives[0].url} stopped after {len(body) // 2} of its {len(body)} "
        "bytes; " + by_hand(tmp_path, *archives)
    )
    assert os.listdir(tmp_path) == []


def test_an_http_error_says_which_files_to_download_by_hand(tmp_path, server, archives):
    del server.files[archives[1].name]
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, archives, progress=False)
    # The first archive arrived, so only the second is left to download by hand.
    assert str(raised.value) == (
        f"could not download {archives[1].url} (HTTP Error 404: Not Found); "
        + by_hand(tmp_path, archives[1])
        + "call fetch() again"
    )
    assert sorted(os.listdir(tmp_path)) == sorted([archives[0].name, FOLDERS[0]])


def test_an_unreachable_server_says_which_files_to_download_by_hand(tmp_path, archives):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = [
        archive._replace(url=f"http://127.0.0.1:{port}/{archive.name}") for archive in archives
    ]
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, unreachable, progress=False, timeout=5)
    message = str(raised.value)
    assert message.startswith(f"could not download {unreachable[0].url} (")
    assert "Connection refused" in message
    assert message.endswith("); " + by_hand(tmp_path, *unreachable) + "call fetch() again")
    assert os.listdir(tmp_path) == []


def test_a_server_that_does_not_answer_in_time_says_which_files_to_download_by_hand(
    tmp_path, server, archives
):
    server.files[archives[0].name] = ("silent", server.files[archives[0].name][1])
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, archives, progress=False, timeout=0.2)
    assert str(raised.value) == (
        f"could not download {archives[0].url} (timed out); "
        + by_hand(tmp_path, *archives)
        + "call fetch() again"
    )
    assert os.listdir(tmp_path) == []


def test_offline_omniglot_names_the_official_files_and_the_command(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError(OSError("[Errno -3] Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dest = tmp_path / "omniglot data"
    with pytest.raises(DownloadError) as raised:
        fetch(dest, progress=False)
    official = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
    assert str(raised.value) == (
        f"could not download {official}images_background.zip ([Errno -3] Temporary failure in "
        f"name resolution); download {official}images_background.zip and "
        f"{official}images_evaluation.zip by hand and put them, unpacked or not, in '{dest}', "
        f"then run `metajax data omniglot '{dest}'` again"
    )
    assert [archive.md5 for archive in OMNIGLOT] == [
        "68d2efa1b9178cc56df9314c21c6e718",
        "6b91aef0f799c5bb55b94e3f2daec811",
    ]


def test_an_archive_put_in_dest_by_hand_is_unpacked_without_a_request(tmp_path, server, archives):
    for archive in archives:
        (tmp_path / archive.name).write_bytes(server.files[archive.name][1])
    assert fetch(tmp_path, archives, progress=False) == [tmp_path / f for f in FOLDERS]
    assert files_under(tmp_path / FOLDERS[1]) == sorted([*IMAGES, MARKER])
    assert server.requests == []


def test_a_folder_unpacked_by_hand_is_used_as_it_is(tmp_path, server, archives):
    with zipfile.ZipFile(io.BytesIO(server.files[archives[0].name][1])) as archive:
        archive.extractall(tmp_path)
    assert fetch(tmp_path, archives, progress=False) == [tmp_path / f for f in FOLDERS]
    assert files_under(tmp_path / FOLDERS[0]) == IMAGES  # no marker: metajax did not check it
    assert server.requests == [archives[1].name]


def test_an_archive_in_dest_with_a_wrong_md5_is_refused_and_kept(tmp_path, server, archives):
    (tmp_path / archives[0].name).write_bytes(b"half an archive")
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, archives, progress=False)
    assert str(raised.value) == (
        f"'{tmp_path / archives[0].name}' has MD5 {md5(b'half an archive')}, not "
        f"{archives[0].md5}: it is damaged or another file. Delete it (metajax then downloads "
        f"it) or replace it with {archives[0].url}, then call fetch() again"
    )
    assert (tmp_path / archives[0].name).read_bytes() == b"half an archive"
    assert server.requests == []


def test_a_folder_without_the_images_is_refused(tmp_path, archives):
    (tmp_path / FOLDERS[0] / "empty").mkdir(parents=True)
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, archives, progress=False)
    assert str(raised.value) == (
        f"'{tmp_path / FOLDERS[0]}' exists but does not hold what {archives[0].name} unpacks to "
        f"({FOLDERS[0]}/Alphabet/character/*.png files); delete or move it, then call fetch() "
        "again"
    )


def test_a_folder_unpacked_from_another_archive_is_refused(tmp_path, archives):
    (tmp_path / FOLDERS[0]).mkdir()
    (tmp_path / FOLDERS[0] / MARKER).write_text("0" * 32 + "\n")
    with pytest.raises(DownloadError, match=r"was unpacked from an archive with MD5 0{32}, not "):
        fetch(tmp_path, archives, progress=False)


def test_an_interrupted_unpack_leaves_no_folder_and_the_next_fetch_finishes(
    tmp_path, monkeypatch, server, archives
):
    extract = zipfile.ZipFile.extract
    calls = []

    def extract_once_then_interrupt(self, member, path=None, pwd=None):
        if calls:
            raise KeyboardInterrupt
        calls.append(member)
        return extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", extract_once_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(tmp_path, archives, progress=False)
    assert len(calls) == 1
    # The checked download is kept; its folder and the temporary directory are not.
    assert os.listdir(tmp_path) == [archives[0].name]
    monkeypatch.undo()
    assert fetch(tmp_path, archives, progress=False) == [tmp_path / f for f in FOLDERS]
    assert files_under(tmp_path / FOLDERS[0]) == sorted([*IMAGES, MARKER])
    assert server.requests == [archives[0].name, archives[1].name]


def test_the_leftovers_of_a_killed_fetch_are_removed(tmp_path, archives):
    (tmp_path / ".metajax-unpack-x1y2" / FOLDERS[0]).mkdir(parents=True)
    (tmp_path / ".metajax-unpack-x1y2" / FOLDERS[0] / "a.png").write_bytes(b"png")
    (tmp_path / f".{archives[0].name}.part").write_bytes(b"half")
    (tmp_path / "notes.part").write_text("not metajax's")
    fetch(tmp_path, archives, progress=False)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [*FOLDERS, *(a.name for a in archives), "notes.part"]
    )


def test_a_file_that_is_not_a_zip_is_refused_naming_it(tmp_path, server, archives):
    garbage = b"<html>a login page, not a zip</html>"
    server.files["garbage.zip"] = ("ok", garbage)
    archive = Archive("garbage.zip", server.url("garbage.zip"), md5(garbage), FOLDERS[0])
    with pytest.raises(DownloadError) as raised:
        fetch(tmp_path, [archive], progress=False)
    assert str(raised.value) == (
        f"'{tmp_path / 'garbage.zip'}' is not a valid zip file (File is not a zip file), though "
        f"its MD5 is the expected {md5(garbage)}: the archive's url or md5 is wrong"
    )
    assert os.listdir(tmp_path) == ["garbage.zip"]


@pytest.mark.parametrize(
    "member", ["../evil", "images_background/../../evil", "/tmp/evil", "C:\\evil"]
)
def test_a_member_outside_the_folder_is_refused(tmp_path, server, member):
    body = zip_bytes({"images_background/a/b/c.png": b"png", member: b"evil"})
    server.files["slip.zip"] = ("ok", body)
    archive = Archive("slip.zip", server.url("slip.zip"), md5(body), "images_background")
    dest = tmp_path / "data"
    with pytest.raises(DownloadError) as raised:
        fetch(dest, [archive], progress=False)
    assert str(raised.value) == (
        f"'{dest / 'slip.zip'}' holds a member '{member}' that would be written outside "
        f"'{dest}', though its MD5 is the expected {md5(body)}; refusing to unpack it: the "
        "archive's url or md5 is wrong"
    )
    assert os.listdir(dest) == ["slip.zip"]
    assert os.listdir(tmp_path) == ["data"]


def test_a_zip_without_the_folder_is_refused(tmp_path, server):
    body = zip_bytes({"other/a/b/c.png": b"png"})
    server.files["other.zip"] = ("ok", body)
    archive = Archive("other.zip", server.url("other.zip"), md5(body), "images_background")
    with pytest.raises(DownloadError, match="holds no folder 'images_background'"):
        fetch(tmp_path, [archive], progress=False)
    assert os.listdir(tmp_path) == ["other.zip"]


def test_a_destination_that_is_a_file_is_refused(tmp_path, archives):
    (tmp_path / "data").write_text("")
    with pytest.raises(DownloadError, match="is a file; choose a directory to put the data in"):
        fetch(tmp_path / "data", archives, progress=False)


def test_progress_is_shown_on_stderr_only_when_asked(tmp_path, capsys, archives):
    fetch(tmp_path / "quiet", archives, progress=False)
    assert capsys.readouterr().err == ""
    fetch(tmp_path / "shown", archives)
    err = capsys.readouterr().err
    assert f"{archives[0].name}: 100%" in err
    assert f"{archives[1].name}: 100%" in err
