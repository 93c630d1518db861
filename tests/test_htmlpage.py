"""The pieces of a report: figures drawn in two processes, the same as in one."""

import gc
import json
import re
import subprocess
import sys

from matplotlib.figure import Figure

from poolwise.htmlpage import draw_svgs


def undated(text):
    """A figure without its time stamp (the SVG's date)."""
    return re.sub(r"<dc:date>.*?</dc:date>", "", text)


def line_figure():
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    return fig


# in a fresh interpreter: the suite's own process may hold JAX, with which nothing is forked
TWO_PROCESSES = """
import json, os, sys, time
from matplotlib.figure import Figure
from poolwise.htmlpage import draw_svgs

folder, fail_in_copy, processes = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
here = os.getpid()

def job(name):
    def draw():
        open(os.path.join(folder, f"{name}-{os.getpid()}"), "w").close()
        if name == "broken":
            raise ValueError("no figure")
        if fail_in_copy and os.getpid() != here:
            raise RuntimeError("not drawn in the copy")
        time.sleep(0.2)  # each process takes some of the jobs
        fig = Figure(figsize=(2, 1))
        fig.add_subplot().plot([0, 1])
        return fig
    return draw

names = sys.argv[4:]
try:
    svgs = draw_svgs({n: job(n) for n in names}, processes=processes)
except ValueError as err:
    svgs = {"error": str(err)}
print(json.dumps({"here": here, "svgs": svgs}))
"""


def two_processes(folder, names, fail_in_copy=False, processes=2):
    folder.mkdir()
    args = [str(folder), str(int(fail_in_copy)), str(processes), *names]
    done = subprocess.run(
        [sys.executable, "-c", TWO_PROCESSES, *args], capture_output=True, text=True, check=True
    )
    out = json.loads(done.stdout)
    drawers = {p.name.split("-")[1] for p in folder.iterdir()}
    return out["svgs"], drawers, str(out["here"])


def test_figures_are_drawn_by_two_processes_and_errors_raised_here(tmp_path):
    names = list("abcdef")
    serial, drawers, here = two_processes(tmp_path / "serial", names, processes=1)
    assert drawers == {here}
    svgs, drawers, here = two_processes(tmp_path / "two", names)
    assert list(svgs) == names
    assert [undated(svgs[n]) for n in names] == [undated(serial[n]) for n in names]
    assert len(drawers) == 2 and here in drawers
    # a job the copy fails is drawn again here; a job that fails here raises its error
    svgs, drawers, here = two_processes(tmp_path / "fails", names, fail_in_copy=True)
    assert [undated(svgs[n]) for n in names] == [undated(serial[n]) for n in names]
    assert len(drawers) == 2
    svgs, _, _ = two_processes(tmp_path / "broken", ["a", "broken", "c"])
    assert svgs == {"error": "no figure"}


def test_garbage_collection_is_paused_while_drawing_and_restored():
    seen = []

    def job():
        seen.append(gc.isenabled())
        return line_figure()

    assert gc.isenabled()
    draw_svgs({"a": job})
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        draw_svgs({"a": job})
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
