"""``AttributionVisualizer.render()`` in a real Jupyter kernel (nbclient + ipykernel).

The kernel is this test's own Python (a kernel spec written to a temporary
JUPYTER_PATH), so it sees the same attribuo as the tests, whatever kernel
specs the machine has installed. The notebook builds the digits example,
renders it, fetches ``/api/config`` from inside the kernel at the iframe's
address, and stops the server; the test checks each cell's outputs and that
the port is closed afterwards while the kernel still runs.
"""

from __future__ import annotations

import json
import re
import socket
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

KERNEL = "attribuo-test-python"
IFRAME = re.compile(r'<iframe src="(http://127\.0\.0\.1:(\d+)/)"')


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernel spec that runs ``sys.executable``, found first via JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "attribuo tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # keep connection files and IPython's profile out of the home directory
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return KERNEL


def _outputs(cell, kind: str) -> list:
    return [o for o in cell.outputs if o.output_type == kind]


def _text(cell) -> str:
    return "".join(o.text for o in _outputs(cell, "stream") if o.name == "stdout")


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_render_shows_the_app_in_a_kernel_and_stop_closes_it(kernel_name, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from attribuo.insights.example import build_visualizer\n"
            "vis = build_visualizer()\n"
            "print(vis.classes[:3])"),
        nbformat.v4.new_code_cell("vis.render(height=600)"),
    ]
    client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        assert "['0', '1', '2']" in _text(nb.cells[0])

        # render(): one display of the iframe (and no Out[] repr), the URL printed
        (shown,) = _outputs(nb.cells[1], "display_data")
        html = shown.data["text/html"]
        found = IFRAME.search(html)
        assert found, html
        url, port = found.group(1), int(found.group(2))
        assert 'height="600"' in html
        assert _outputs(nb.cells[1], "execute_result") == []
        assert url in _text(nb.cells[1])

        # the kernel asks the server at the iframe's address, as the browser would
        nb.cells.append(nbformat.v4.new_code_cell(
            "import json, urllib.request\n"
            f"with urllib.request.urlopen({url + 'api/config'!r}, timeout=30) as r:\n"
            "    config = json.load(r)\n"
            "print('config', json.dumps({'classes': config['classes'], "
            "'models': config['models']}))"))
        client.execute_cell(nb.cells[2], 2)
        printed = _text(nb.cells[2])
        assert printed.startswith("config "), nb.cells[2].outputs
        config = json.loads(printed.split(" ", 1)[1])
        assert config["classes"] == [str(d) for d in range(10)]
        assert config["models"] == ["DigitsCNN"]

        nb.cells.append(nbformat.v4.new_code_cell(
            "vis.stop()\n"
            "import urllib.error\n"
            "try:\n"
            f"    urllib.request.urlopen({url!r}, timeout=5)\n"
            "    print('still serving')\n"
            "except urllib.error.URLError:\n"
            "    print('stopped')"))
        client.execute_cell(nb.cells[3], 3)
        assert _text(nb.cells[3]).strip() == "stopped"
        assert _refused(port)
        # the kernel runs on: stop(), not the kernel's end, closed the port
        nb.cells.append(nbformat.v4.new_code_cell("print('alive')"))
        client.execute_cell(nb.cells[4], 4)
        assert _text(nb.cells[4]).strip() == "alive"
