"""One file, written with the runner's safety, from Python.

``StdDaqClient.start_writer_sync`` is the original client's call: it overwrites an existing file
without a word, and a lost reply leaves you guessing. :func:`write_file` writes one file the way
``daq-run`` writes each file of a batch: an existing file is refused (unless ``overwrite``), the
acquisition gets a unique run_id and is started exactly once, it is followed to its provable end,
it passes only when FINISHED with every image written and confirmed by the DAQ's own log, and an
acquisition that did not pass is stopped::

    from daq_runner import StdDaqClient, write_file

    record = write_file(StdDaqClient("http://daq-host:5000"), "/data/e12345/dark.h5", 100)
    print(record.acquisition_id, record.n_written, record.daq_log["message"])
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

from . import events
from .batch import load_batch_text
from .client import StdDaqClient
from .daq import ALLOW_OVERWRITE
from .exceptions import BatchValidationError, StepFailed
from .record import StepRecord
from .rest_v2 import RestV2Daq
from .runner import Runner

__all__ = ["write_file"]

_ONE_WRITE = """\
version: 1
name: write_file
steps:
  - write: {output_file: "{output_file}", n_images: "{n_images}", overwrite: "{overwrite}"}
    timeout: "{timeout}"
"""


def write_file(
    daq: Union[StdDaqClient, str],
    output_file: str,
    n_images: int,
    *,
    redis_url: Optional[str] = None,
    overwrite: bool = False,
    timeout: float = 300.0,
    consumers: Iterable[events.Consumer] = (),
) -> StepRecord:
    """Write ``n_images`` images to ``output_file`` on the rest_v2 DAQ ``daq`` (a client or a URL).

    Args:
        redis_url: the DAQ's Redis: its status stream is followed instead of polling REST, and
            the runner lock is taken there (another daq-run on this DAQ then keeps off).
        overwrite: replace an existing file (default: refused, nothing sent).
        timeout: seconds the whole write may take, its waits included.
        consumers: callables receiving the events of the write (e.g. a
            :class:`~daq_runner.console.ConsoleView` to watch it).

    Returns:
        The write's :class:`~daq_runner.record.StepRecord`: ``acquisition_id`` (the run_id),
        ``n_written``, ``acquisition`` (the DAQ's final status of it), ``daq_log`` (its log record).

    Raises:
        BatchValidationError: an output path or a number of images the DAQ cannot take (before
            anything is sent).
        StepFailed: the write did not pass; the message says why (the acquisition was stopped).
        LockHeldError: another runner drives this DAQ (with ``redis_url``).
    """
    try:
        batch = load_batch_text(
            _ONE_WRITE,
            vars={"output_file": output_file, "n_images": str(n_images), "overwrite": str(bool(overwrite)).lower(), "timeout": repr(float(timeout))},
        )
    except BatchValidationError as exc:
        # Said in the call's words: no position in a batch file the caller never wrote.
        raise BatchValidationError("; ".join(error.reason for error in exc.errors), "write_file") from None
    client = daq if isinstance(daq, StdDaqClient) else StdDaqClient(daq)
    runner = Runner(daq=RestV2Daq(client.url_base, redis_url, client=client), consumers=consumers, lock=redis_url is not None, lock_url=redis_url)
    report = runner.run(batch)
    (record,) = report.steps
    if not record.status.value == "passed":
        error = record.error or report.reason or f"the write {record.status}"
        raise StepFailed(error.replace(ALLOW_OVERWRITE, "pass overwrite=True to write_file"))
    return record
