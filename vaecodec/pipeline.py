"""Worker processes: many images coded at once, each worker with its own loaded model.

Why processes: a Kodak-sized image spends its time in the networks, the integer prior, the ANS coder
and image I/O, and only the first of these runs on several cores by itself. constriction and Pillow
hold the GIL, and the prior's many small integer convolutions do not spread well over threads, so
threads cannot overlap them; processes can. So a :class:`Pool` is N processes, each holding one
:class:`vaecodec.codec.Codec` (the model is loaded once per worker, not per image) that codes whole
chunks of images, from reading the input to the finished file or array.

On a CPU the cores are shared out: each worker gets ``cores // N`` torch threads, so ``N`` workers
never oversubscribe the machine. On a GPU every worker drives the one device with its own CUDA
context, and its chunks are network batches (:attr:`Codec.default_batch_size`): while one worker's
networks run, the others read, entropy-code and write, which is what keeps the GPU fed.

Order and memory: :meth:`Pool.map` takes any iterable, keeps at most ``2 * N`` chunks in flight and
yields results in input order, so a collection that does not fit in memory streams through in
constant memory. Workers ignore Ctrl-C; the parent stops them with SIGTERM, which unwinds a worker
like an exception does, so an output being written is removed, never left partial
(:func:`vaecodec.files.write_atomic`).

Results are the same bytes as one-at-a-time coding: the integer parts are exact, and the float
networks give the same latents whatever the thread count (checked by ``tests/test_pipeline.py`` and
``bench/scaling_workers.py``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import VaecodecError
from .files import remove_partial_outputs

if TYPE_CHECKING:
    from .codec import Codec

T = TypeVar("T")
R = TypeVar("R")

# in-flight chunks per worker: one being coded, one queued, so a worker never waits for the parent
IN_FLIGHT_PER_WORKER = 2


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes: ``threads`` if given, else an equal share of
    the cores."""
    return threads if threads else max(1, cores() // workers)


def check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise VaecodecError(f"workers must be a whole number >= 1, got {workers!r}")
    return workers


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter), taken lazily."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


# ---- the worker side -------------------------------------------------------------------------

@dataclass(frozen=True)
class CodecSpec:
    """What a worker needs to load the same codec as its parent: the model (a shipped name, a path or
    None for the default), the device, the pixel limit, its torch threads and the synthesis's
    precision."""

    model: str | None
    device: str
    max_pixels: int | None
    threads: int
    precision: str | None = None


_codec: Codec | None = None
_init_error: VaecodecError | None = None


def _terminate(signum: int, frame: Any) -> None:
    remove_partial_outputs()  # first: the exit may land where write_atomic cannot clean up
    raise SystemExit(128 + signum)


def _init_worker(spec: CodecSpec) -> None:
    """Load the worker's codec once. A load that fails (a bad weights file, no CUDA) is kept and
    raised by the first task, so the parent reports it in one line."""
    global _codec, _init_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    torch.set_num_threads(spec.threads)
    from .codec import Codec

    try:
        _codec = Codec(spec.model, spec.device, spec.max_pixels, spec.precision)
    except VaecodecError as exc:
        _init_error = exc
    # from here on a stop unwinds the task being run; until here it ends the process as by default
    signal.signal(signal.SIGTERM, _terminate)


class _InitFailed(Exception):
    """A worker could not load its codec; carries the one-line reason."""


def _run(fn: Callable[[Codec, T], R], chunk: T) -> R:
    if _init_error is not None:
        raise _InitFailed(str(_init_error))
    return fn(_codec, chunk)


# ---- the parent side -------------------------------------------------------------------------

class Pool:
    """``workers`` processes, each with a codec loaded from ``spec``.

    >>> with Pool(spec, workers=2) as pool:
    ...     for result in pool.map(task, chunks_of_inputs): ...

    ``task(codec, chunk)`` must be a module-level function (it is pickled by name), and chunks and
    results must pickle: paths, bytes, arrays, PIL images and :class:`VaecodecError` all do.
    """

    def __init__(self, spec: CodecSpec, workers: int) -> None:
        self.workers = check_workers(workers)
        # spawn, not fork: a forked child would inherit torch's thread pools and CUDA state mid-use
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(spec,))

    def map(self, task: Callable[[Codec, T], R], items: Iterable[T]) -> Iterator[R]:
        """``task(codec, item)`` for every item, in a worker, yielded in input order; at most
        ``IN_FLIGHT_PER_WORKER * workers`` items are taken from ``items`` ahead of the results."""
        pending: deque[Future] = deque()
        limit = IN_FLIGHT_PER_WORKER * self.workers
        try:
            for item in items:
                pending.append(self._submit(task, item))
                if len(pending) >= limit:
                    yield self._result(pending.popleft())
            while pending:
                yield self._result(pending.popleft())
        except BaseException:
            self.stop()
            raise

    def _submit(self, task: Callable, item: object) -> Future:
        """Submit one item. A submit may start a worker: it starts with Ctrl-C ignored (as the
        disposition is inherited), so that a Ctrl-C while it imports cannot print a traceback."""
        if threading.current_thread() is not threading.main_thread():
            return self._executor.submit(_run, task, item)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return self._executor.submit(_run, task, item)
        finally:
            signal.signal(signal.SIGINT, previous)

    @staticmethod
    def _result(future: Future) -> Any:
        try:
            return future.result()
        except _InitFailed as exc:
            raise VaecodecError(str(exc)) from None
        except BrokenProcessPool:
            raise VaecodecError("a worker process died (out of memory, or killed); the run stopped") from None

    def stop(self) -> None:
        """Stop now: queued chunks are dropped, running ones are interrupted (SIGTERM), so that no
        output is left half-written."""
        for proc in list((getattr(self._executor, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.stop()
