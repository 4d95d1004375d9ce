"""Progress bars: tqdm on a terminal, whole status lines in a log file, nothing with quiet."""

from __future__ import annotations

import io

from defectnas.progress import LineProgress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_whole_lines_and_the_final_count_once():
    log = io.StringIO()
    bar = progress(total=10, file=log, desc="encoding", unit="products")
    assert isinstance(bar, LineProgress)
    for _ in range(10):
        bar.update(1)  # within LOG_EVERY_S: no line per update
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 2 and "0/10" in lines[0] and "10/10" in lines[1]  # the start, then the end once
    log = io.StringIO()
    for _ in progress(range(3), file=log, desc="epoch 1/4", leave=False):  # a bar that is not kept still says where it ended
        pass
    assert log.getvalue().splitlines()[-1].startswith("epoch 1/4: 100%") and "\r" not in log.getvalue()


def test_redraws_within_the_interval_write_nothing_and_log_lines_above_a_bar_leave_no_carriage_return():
    """set_postfix redraws at every call (a training step, a search child): still one line per
    interval, and the final count correct; a message written "above" the bar (tqdm's
    external_write_mode, as the search logs its trials) neither clears nor repeats the bar."""
    from tqdm.auto import tqdm

    log = io.StringIO()
    bar = progress(range(50), file=log, desc="epoch 1/1")
    for i in bar:
        bar.set_postfix(loss=f"{i:.4f}")
        with tqdm.external_write_mode(file=log):
            log.write(f"step {i}\n")
    text = log.getvalue()
    assert "\r" not in text
    bar_lines = [line for line in text.splitlines() if line.startswith("epoch")]
    assert len(bar_lines) == 2 and "0/50" in bar_lines[0] and "50/50" in bar_lines[1]


def test_a_terminal_gets_tqdm_and_quiet_gets_nothing():
    term = Terminal()
    for _ in progress(range(3), file=term, desc="x"):
        pass
    assert "\r" in term.getvalue() and not isinstance(progress(range(1), file=Terminal()), LineProgress)
    silent = io.StringIO()
    for _ in progress(range(3), file=silent, quiet=True):
        pass
    assert silent.getvalue() == ""
