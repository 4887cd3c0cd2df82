"""The predictor's building blocks in-process: the dynamic batcher, the byte-bounded LRU, the V2 client codec."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from audio_score import v2
from audio_score.cache import CacheEntry
from predictors.batcher import SAFETY, DeadlineExpired, DeadlineUnreachable, DynamicBatcher, QueueFull
from predictors.references import LRUBytes


class Recorder:
    """A backend stand-in: records each call's batch, can block until released, can fail on an item."""

    def __init__(self, delay_s: float = 0.0, fail_on: object = None) -> None:
        self.calls: list[list[int]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.gate.wait(10)
        self.calls.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on in items:
            raise RuntimeError(f"cannot process {self.fail_on}")
        return [i * 10 for i in items]


def make(fn: Recorder, **kwargs: object) -> tuple[DynamicBatcher[int, int], ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    options = {"max_batch_size": 4, "max_wait_s": 0.05, "max_queue_size": 16, **kwargs}
    return DynamicBatcher(fn, name="test", executor=executor, **options), executor  # type: ignore[arg-type]


def test_concurrent_requests_form_batches_with_per_request_results() -> None:
    fn = Recorder()

    async def main() -> list[int]:
        batcher, executor = make(fn, max_batch_size=4, max_wait_s=0.2)
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        finally:
            await batcher.close()
            executor.shutdown()

    results = asyncio.run(main())
    assert results == [i * 10 for i in range(10)]
    assert all(len(call) <= 4 for call in fn.calls)
    assert max(len(call) for call in fn.calls) == 4
    assert sorted(i for call in fn.calls for i in call) == list(range(10))
    assert fn.threads == {"model_0"}  # one worker thread: one batch at a time


def test_next_batch_forms_while_one_runs() -> None:
    fn = Recorder()

    async def main() -> None:
        batcher, executor = make(fn, max_batch_size=8, max_wait_s=0.0)
        fn.gate.clear()  # the first batch blocks on the worker
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.1)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.1)
        fn.gate.set()
        await asyncio.gather(first, *rest)
        await batcher.close()
        executor.shutdown()

    asyncio.run(main())
    # Even with no wait at all, the five that arrived while batch [0] ran went together in the next call.
    assert fn.calls == [[0], [1, 2, 3, 4, 5]]


def test_full_queue_is_refused_at_once() -> None:
    fn = Recorder()

    async def main() -> tuple[list[object], float]:
        batcher, executor = make(fn, max_batch_size=1, max_wait_s=0.0, max_queue_size=2)
        fn.gate.clear()
        running = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.1)  # 0 is on the worker; the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(QueueFull, match="at capacity"):
            await batcher.submit(3)
        refused_after = time.perf_counter() - started
        fn.gate.set()
        results = await asyncio.gather(running, *queued)
        await batcher.close()
        executor.shutdown()
        return results, refused_after

    results, refused_after = asyncio.run(main())
    assert results == [0, 10, 20]
    assert refused_after < 5  # refused without waiting for the blocked worker (which waits 10 s)


def test_cancelled_request_does_not_poison_its_batch() -> None:
    fn = Recorder()

    async def main() -> list[int]:
        batcher, executor = make(fn, max_batch_size=8, max_wait_s=0.3)
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
        await asyncio.sleep(0.05)
        tasks[1].cancel()  # the caller gave up while the batch was still forming
        timed_out = asyncio.ensure_future(asyncio.wait_for(batcher.submit(99), timeout=0.01))
        done = await asyncio.gather(*tasks, timed_out, return_exceptions=True)
        await batcher.close()
        executor.shutdown()
        return done

    done = asyncio.run(main())
    assert done[0] == 0 and done[2] == 20 and done[3] == 30
    assert isinstance(done[1], asyncio.CancelledError)
    assert isinstance(done[4], TimeoutError)
    assert [sorted(c) for c in fn.calls] == [[0, 2, 3]]


def test_a_failing_item_fails_only_its_own_request() -> None:
    fn = Recorder(fail_on=2)

    async def main() -> list[object]:
        batcher, executor = make(fn, max_batch_size=4, max_wait_s=0.2)
        done = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        await batcher.close()
        executor.shutdown()
        return done

    done = asyncio.run(main())
    assert done[0] == 0 and done[1] == 10 and done[3] == 30
    assert isinstance(done[2], RuntimeError)


def test_a_deadline_already_passed_is_refused_without_reaching_the_model() -> None:
    fn = Recorder()

    async def main() -> None:
        batcher, executor = make(fn, max_wait_s=0.0)
        with pytest.raises(DeadlineUnreachable, match="deadline"):
            await batcher.submit(1, deadline=time.perf_counter() - 0.001)
        assert await batcher.submit(2, deadline=time.perf_counter() + 60) == 20  # no estimate yet: admitted
        await batcher.close()
        executor.shutdown()

    asyncio.run(main())
    assert fn.calls == [[2]]


def test_expected_wait_over_the_deadline_is_refused_at_once_with_a_retry_after() -> None:
    fn = Recorder(delay_s=0.2)

    async def main() -> None:
        batcher, executor = make(fn, max_batch_size=1, max_wait_s=0.0)
        await batcher.submit(0)  # one batch of >= 0.2 s: the estimate exists now
        assert batcher.batch_seconds is not None and batcher.batch_seconds >= 0.2
        expected = batcher.expected_finish_s()
        assert expected is not None and expected >= 0.2 * SAFETY
        with pytest.raises(DeadlineUnreachable) as refused:
            await batcher.submit(1, deadline=time.perf_counter() + 0.1)
        assert refused.value.retry_after_s >= 0.2
        assert await batcher.submit(2, deadline=time.perf_counter() + 60) == 20
        await batcher.close()
        executor.shutdown()

    asyncio.run(main())
    assert fn.calls == [[0], [2]]  # 1 never reached the model


def test_a_queued_request_that_can_no_longer_finish_is_dropped_before_the_model() -> None:
    fn = Recorder(delay_s=0.2)

    async def main() -> None:
        batcher, executor = make(fn, max_batch_size=1, max_wait_s=0.0)
        await batcher.submit(0)  # learn the batch time (>= 0.2 s)
        fn.gate.clear()  # the next batch holds the worker until released
        running = asyncio.ensure_future(batcher.submit(1))
        while batcher.depth or batcher._runner_free():
            await asyncio.sleep(0.01)
        # Admitted (the worker might free up in time), then held in the queue until it cannot finish any more.
        queued = asyncio.ensure_future(batcher.submit(2, deadline=time.perf_counter() + 3 * batcher.batch_seconds))
        with pytest.raises(DeadlineExpired, match="could not finish"):
            await queued
        fn.gate.set()
        assert await running == 10
        await batcher.close()
        executor.shutdown()

    asyncio.run(main())
    assert fn.calls == [[0], [1]]  # 2 was dropped, never computed


def _entry(nbytes: int) -> CacheEntry:
    return CacheEntry(meta={}, transcript="", embedding=np.zeros(nbytes // 4, np.float32), frames=np.zeros((0, 1)))


def test_lru_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    lru = LRUBytes(max_bytes=1000, model="m")
    for i in range(3):
        lru.put(("u", str(i)), _entry(400))
    assert len(lru) == 2 and lru.nbytes == 800
    assert lru.get(("u", "0")) is None
    assert lru.get(("u", "1")) is not None  # now most recent
    lru.put(("u", "3"), _entry(400))
    assert lru.get(("u", "2")) is None and lru.get(("u", "1")) is not None
    lru.put(("u", "big"), _entry(4000))  # larger than the bound: not kept, nothing evicted for it
    assert lru.get(("u", "big")) is None and len(lru) == 2
    assert LRUBytes(max_bytes=0, model="m").get(("u", "0")) is None


def test_v2_codec_round_trip_of_binary_request_and_response() -> None:
    audio = np.linspace(-1, 1, 1000, dtype=np.float32)
    body, headers = v2.build_infer_request(audio, "video1", "clip1")
    head_len = int(headers[v2.INFERENCE_HEADER])
    assert np.array_equal(np.frombuffer(body[head_len:], "<f4"), audio)
    # A binary response as KServe writes it: JSON header, then raw outputs in order.
    import json

    raw_scores = np.array([0.5], np.float32).tobytes()
    raw_text = v2.encode_bytes_tensor(["héllo"])
    doc = {
        "outputs": [
            {"name": "sim_score", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
            {"name": "audio_sim_score", "datatype": "FP32", "shape": [1], "data": [1.0]},
            {"name": "text_sim_score", "datatype": "FP32", "shape": [1], "data": [0.0]},
            {"name": "transcript", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 10}},
            {"name": "reference_transcript", "datatype": "BYTES", "shape": [1], "data": ["ref"]},
        ]
    }
    head = json.dumps(doc).encode()
    parsed = v2.parse_score_response(head + raw_scores + raw_text, {"Inference-Header-Content-Length": str(len(head))})
    assert parsed == {
        "sim_score": 0.5,
        "audio_sim_score": 1.0,
        "text_sim_score": 0.0,
        "transcript": "héllo",
        "reference_transcript": "ref",
    }
    with pytest.raises(v2.V2ProtocolError):
        v2.parse_score_response(head + raw_scores, {"inference-header-content-length": str(len(head))})
    assert v2.error_message(b'{"error": "no reference clip"}') == "no reference clip"
    with pytest.raises(ValueError):
        v2.build_infer_request(audio, "video1", None)


def test_a_reference_in_memory_counts_its_prepared_frames() -> None:
    from predictors.references import Cached

    frames = np.ones((500, 64), dtype=np.float16)
    entry = CacheEntry(
        meta={}, transcript="hi", embedding=np.zeros(64, np.float32), frames=frames, reference_text="hello"
    )
    cached = Cached.of(entry, None, pool=2)
    assert cached.entry.frames.shape == (0, 64)  # the raw frames are not kept twice
    assert cached.frames.units.shape == (250, 64)
    assert cached.nbytes == cached.entry.nbytes + cached.frames.nbytes >= frames.nbytes
    lru = LRUBytes(max_bytes=cached.nbytes * 2 - 1, model="m")
    lru.put(("u", "a"), cached)
    lru.put(("u", "b"), cached)
    assert len(lru) == 1 and lru.nbytes == cached.nbytes  # the frames' bytes made the second one evict the first


def _score_doc(**extra: object) -> bytes:
    import json

    outputs = [
        {"name": n, "datatype": "FP32", "shape": [1], "data": [0.5]}
        for n in ("sim_score", "audio_sim_score", "text_sim_score")
    ]
    outputs += [
        {"name": n, "datatype": "BYTES", "shape": [1], "data": ["x"]} for n in ("transcript", "reference_transcript")
    ]
    for name, value in extra.items():
        datatype = "FP32" if isinstance(value, float) else "BYTES"
        outputs.append({"name": name, "datatype": datatype, "shape": [1], "data": [value]})
    return json.dumps({"outputs": outputs}).encode()


def test_v2_codec_parses_the_feedback_outputs_and_refuses_malformed_ones() -> None:
    import json

    words = [{"op": "substitution", "word": "cat", "said": "cap"}, {"op": "deletion", "word": "sat", "said": None}]
    parsed = v2.parse_score_response(
        _score_doc(
            audio_pooled_sim_score=0.9,
            audio_aligned_sim_score=0.25,
            audio_similarity="aligned",
            word_accuracy=0.0,
            words=json.dumps(words),
            reference_text="",
        )
    )
    assert parsed["words"] == words
    assert (parsed["audio_aligned_sim_score"], parsed["audio_similarity"], parsed["reference_text"]) == (
        0.25,
        "aligned",
        "",
    )
    # An older predictor without the new outputs still parses: they are simply absent.
    assert set(v2.parse_score_response(_score_doc())) == set(v2.SCORE_REQUIRED)
    bad_words = (
        "not json",
        '{"op": "match"}',
        '[{"op": "skip", "word": "a", "said": "a"}]',
        '[{"op": "match", "word": 1}]',
    )
    for bad in bad_words:
        with pytest.raises(v2.V2ProtocolError, match="words"):
            v2.parse_score_response(_score_doc(words=bad))
    with pytest.raises(v2.V2ProtocolError, match="audio_similarity"):
        v2.parse_score_response(_score_doc(audio_similarity="dtw"))
