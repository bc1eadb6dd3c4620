"""Upload checks without a server: they are safe to run from many decode threads at once."""

from __future__ import annotations

import io
import threading
import warnings

from PIL import Image

from smallvision.serving.uploads import Upload, check_pixels


def test_check_pixels_leaves_the_process_warning_filters_alone_while_other_threads_change_them():
    """check_pixels runs in decode threads: if it swapped warnings.filters (catch_warnings), a filter another thread
    adds meanwhile would be lost when it swaps them back."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    upload = Upload("tiny.png", buf.getvalue())
    stop = threading.Event()

    def check_forever() -> None:
        while not stop.is_set():
            check_pixels(upload, 100)

    lost = []
    with warnings.catch_warnings():  # this test's own filters end with it (only this thread changes them here)
        thread = threading.Thread(target=check_forever)
        thread.start()
        try:
            for number in range(1000):
                warnings.filterwarnings("ignore", message=f"marker {number}")
                if not any(f[1] is not None and f[1].pattern == f"marker {number}" for f in warnings.filters):
                    lost.append(number)
        finally:
            stop.set()
            thread.join()
        kept = {f[1].pattern for f in warnings.filters if f[1] is not None and f[1].pattern.startswith("marker")}
    assert not lost and len(kept) == 1000, f"{len(lost)} filters lost at once, {1000 - len(kept)} in all"
