"""What the timeline picture promises: a PNG with one labelled row per speaker, reference on top."""
import os

from diarize.plot import plot_timeline
from diarize.writers import Turn

HYP = [Turn(0, 4.5, "spk0"), Turn(4.5, 9, "spk1"), Turn(9.6, 14.5, "spk0"), Turn(14.5, 20, "spk2")]
REF = [Turn(0, 4.2, "alice"), Turn(4, 9.5, "bob"), Turn(9.8, 20, "alice")]


def row_labels(fig):
    return [t.get_text() for t in fig.axes[0].get_yticklabels()]


def test_plot_writes_a_png_with_one_row_per_speaker(tmp_path):
    path = tmp_path / "timeline.png"
    fig = plot_timeline(HYP, path, title="meeting")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert row_labels(fig) == ["spk0", "spk1", "spk2"]
    assert fig.axes[0].get_xlabel() == "time (s)"
    assert os.listdir(tmp_path) == ["timeline.png"]  # no temporary file left behind


def test_reference_rows_come_first_labelled_ref(tmp_path):
    fig = plot_timeline(HYP, tmp_path / "t.png", reference=REF, duration=25)
    assert row_labels(fig) == ["ref alice", "ref bob", "spk0", "spk1", "spk2"]
    ax = fig.axes[0]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # rows run top to bottom, in label order
    assert ax.get_xlim() == (0, 25)


def test_plot_of_no_turns_still_writes_a_picture(tmp_path):
    plot_timeline([], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0
