"""The classify tab keeps no uploads for ever (issue 16): Gradio deletes them from its cache
on a schedule, and the tab's start cleans what a killed process left half-written."""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
from pathlib import Path

from PIL import Image
from test_gradio import free_port


def post_file(url: str, name: str, content: bytes) -> str:
    """Upload one file as a browser does; the server-side path Gradio kept it at."""
    boundary = "----cnnclassroom"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode() + content + (
            f"\r\n--{boundary}--\r\n").encode()  # fmt: skip
    request = urllib.request.Request(
        url + "gradio_api/upload", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())[0]


def test_uploads_are_deleted_from_gradios_cache_once_old(tmp_path, monkeypatch):
    import gradio_app
    from core.classify import Classifier
    from core.store import Store

    assert gradio_app.build_demo().delete_cache == gradio_app.DELETE_CACHE
    monkeypatch.setattr(gradio_app, "DELETE_CACHE", (1, 1))  # every second, older than one
    demo = gradio_app.build_demo(Classifier(Store(tmp_path / "store")))
    port = free_port()
    gradio_app.launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    try:
        buf = io.BytesIO()
        Image.new("L", (28, 28), 200).save(buf, "PNG")
        path = Path(post_file(f"http://127.0.0.1:{port}/", "shoe.png", buf.getvalue()))
        assert path.is_file()
        deadline = time.monotonic() + 20
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not path.exists()
    finally:
        demo.close()


def test_the_tab_cleans_stale_partial_uploads_when_it_starts(tmp_path, monkeypatch):
    import gradio_app
    from core.data import archive

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = tmp_path / "store"
    part = store / "uploads" / ("a" * 16) / "0123456789abcdef" / ".tmp-killed.part"
    scratch = archive.default_root() / ".extract-killed"
    for path in (part, scratch / "0.png"):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"partial")
    then = time.time() - 2 * archive.STALE_AFTER
    for path in (part, scratch):
        os.utime(path, (then, then))
    served = []
    monkeypatch.setattr(gradio_app, "launch", lambda demo, host, port: served.append(port))
    gradio_app.main(["--store", str(store), "--port", "7999"])
    assert served == [7999] and not part.exists() and not scratch.exists()
