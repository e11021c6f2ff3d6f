"""The API says when a generation will be done, and the studio's quote says it before one is queued."""

from __future__ import annotations

from pathlib import Path

from tests.api.test_warnings import _client


def test_a_queued_generation_says_when_it_will_be_done_behind_the_queue(tmp_path: Path) -> None:
    client, auth, store = _client(tmp_path)
    body = {"model": "ray-2", "prompt": "a red circle moves to the left", "resolution": "540p", "duration": "5s"}
    with client:
        url = "/dream-machine/v1/generations/video"
        first = client.post(url, json=body, headers=auth).json()
        assert first["eta_s"] > 0 and first["wait_s"] == 0 and first["done_in_s"] == first["run_s"] == first["eta_s"]
        quote = client.post("/v1/studio/quote", json=body, headers=auth).json()
        assert quote["done_in_s"] == round(2 * first["eta_s"], 3)  # behind the first, then its own run
        second = client.post(url, json=body, headers=auth).json()
        assert second["wait_s"] == first["eta_s"] and second["done_in_s"] == quote["done_in_s"]
        client.delete(f"/dream-machine/v1/generations/{first['id']}", headers=auth)
        again = client.get(f"/dream-machine/v1/generations/{second['id']}", headers=auth).json()
        assert again["wait_s"] == 0 and again["done_in_s"] == again["eta_s"]  # read live: the queue moved
    store.close()
