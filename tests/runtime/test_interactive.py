"""The session host's parts that need no server: a slow socket's sink, the price of a second, encoding."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image

from noor.runtime.interactive import SINK_FRAMES, Sink, encode, second_price_microcents


def test_a_slow_socket_loses_old_frames_and_their_statuses_never_control_messages() -> None:
    async def run() -> list[tuple[object, ...]]:
        sink = Sink(asyncio.get_running_loop())
        for n in range(SINK_FRAMES + 3):
            sink.put("bytes", b"frame %d" % n)
            sink.put("json", {"type": "status", "frame": n})
        sink.put("json", {"type": "ended", "reason": "client"})
        sink.put("close", 1000, "session ended: client")
        await asyncio.sleep(0)  # call_soon_threadsafe runs on the next loop turn
        items = []
        while not sink.queue.empty():
            item = sink.queue.get_nowait()
            sink.taken(item)
            items.append(item)
        sink.put("bytes", b"again")  # sent ones free their places
        await asyncio.sleep(0)
        items.append(sink.queue.get_nowait())
        return items

    items = asyncio.run(run())
    frames = [i for i in items if i[0] == "bytes"]
    statuses = [i[1]["frame"] for i in items if i[0] == "json" and i[1]["type"] == "status"]  # type: ignore[index]
    assert [f[1] for f in frames[:-1]] == [b"frame %d" % n for n in range(SINK_FRAMES)]
    assert statuses == list(range(SINK_FRAMES))  # a dropped frame's status is dropped with it
    assert items[-3:] == [("json", {"type": "ended", "reason": "client"}), ("close", 1000, "session ended: client"),
                          ("bytes", b"again")]  # fmt: skip


def test_a_second_costs_a_second_of_the_chip() -> None:
    assert second_price_microcents("cpu-local", 1.0) == 1389  # $0.05 an hour (catalog)
    assert second_price_microcents("cpu-local", 2.0) == 2778
    assert second_price_microcents("no-such-chip", 1.0) == 0  # logged: not billed


def test_frames_are_jpeg_or_png() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, 32:] = (200, 40, 10)
    png = encode(frame, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as image:
        assert np.array_equal(np.asarray(image), frame)
    assert encode(frame, "jpeg")[:2] == b"\xff\xd8"
