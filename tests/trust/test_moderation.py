"""Moderation (#30 part 3): the bilingual policy on 58 dodged blocked prompts and 202 benign ones, tenants' files,
uploads' metadata, the decision log, frame checkers, the API's 400 before any charge and a bad file at start."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from noor.trust import audit, moderation
from noor.trust.moderation import Classifier, Decision, PolicyError, load_policy, moderate_text
from tests.api.test_hardening import api as api  # a TestClient on SQLite, tenant acme with 1000 credits

PROMPTS = tomllib.loads((Path(__file__).parent / "moderation_prompts.toml").read_text(encoding="utf-8"))
BUILTIN = load_policy()


def test_every_blocked_prompt_is_refused() -> None:
    blocked = PROMPTS["blocked"]
    assert len(blocked) >= 40
    missed = [p for p in blocked if moderate_text([p], BUILTIN).allowed]
    print(f"blocked prompts refused: {len(blocked) - len(missed)}/{len(blocked)}")
    assert missed == []


def test_at_most_one_percent_of_benign_prompts_is_refused() -> None:
    benign = PROMPTS["benign"]
    assert len(benign) >= 200
    refused = {p: moderate_text([p], BUILTIN) for p in benign}
    refused = {p: d for p, d in refused.items() if not d.allowed}
    print(f"benign prompts refused: {len(refused)}/{len(benign)} = {len(refused) / len(benign):.1%}")
    assert len(refused) <= len(benign) // 100, refused


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("statue of the goddess Isis", None),  # a word, not a substring: the goddess is not the group
        ("isis fighters marching", "terrorism"),
        ("aerial view of Scunthorpe", None),
        ("a naked mole rat", None),
        ("a naked child", "sexual_minors"),
        ("a child plays with a kite while far away a naked statue stands", None),  # 8 words apart (within 6)
        ("دَاعِـــشُ", "terrorism"),  # diacritics and tatweel
        ("ﺩﺍﻋﺶ", "terrorism"),  # Arabic presentation forms
        ("وبحزام ناسف", "terrorism"),  # joined و and ب
        ("للإباحية الأطفال", "sexual_minors"),  # لل + the article
    ],
)
def test_words_are_matched_whole_after_normalisation(text: str, category: str | None) -> None:
    assert moderate_text([text], BUILTIN).category == category


def test_a_decision_names_the_rule_and_never_the_text() -> None:
    decision = moderate_text(["a benign start", "daesh banner"], BUILTIN)
    assert decision == Decision(False, "terrorism", "terrorism.terms")
    assert decision.reason == "content_moderated: terrorism (rule terrorism.terms)"
    assert "daesh" not in repr(decision)


def test_a_negative_prompt_is_read_only_by_the_rules_for_one() -> None:
    # what people list so as NOT to see it passes; a slur is refused anywhere
    assert moderate_text(["nsfw, nude, gore video, porn"], BUILTIN, negative=True).allowed
    assert not moderate_text(["nsfw, nude, gore video, porn"], BUILTIN).allowed
    assert moderate_text(["ugly, raghead"], BUILTIN, negative=True).category == "hate"


def _tenant_file(tmp_path: Path, text: str, name: str = "acme") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_tenants_file_adds_and_removes_terms(tmp_path: Path) -> None:
    _tenant_file(
        tmp_path,
        'remove_terms = ["gore video"]\nremove_rules = ["hate.incitement"]\n'
        '[[rules]]\nid = "brand.rivals"\ncategory = "brand"\nterms = ["Globex Cola", "جلوبكس كولا"]\n',
    )
    policies = moderation.load_policies(tmp_path)
    acme, other = policies.for_tenant("acme"), policies.for_tenant("initech")
    assert moderate_text(["a gore video"], acme).allowed and not moderate_text(["a gore video"], other).allowed
    assert moderate_text(["death to muslims"], acme).allowed
    assert moderate_text(["a bottle of globex  cola"], acme) == Decision(False, "brand", "brand.rivals")
    assert moderate_text(["زجاجة جلوبكس كولا"], acme).category == "brand"
    assert moderate_text(["globex cola"], other).allowed
    assert not moderate_text(["a beheading"], acme).allowed  # the rest of the rule stays


@pytest.mark.parametrize(
    ("text", "needed"),
    [
        ('remove_rules = ["hate.slurs"', "not valid TOML"),
        ("log_txt = false\n", "unknown key 'log_txt'"),
        ('remove_rules = ["sexual_minors.combination"]\n', "locked"),
        ('remove_terms = ["child porn"]\n', "locked"),
        ('remove_rules = ["no.such"]\n', "no rule 'no.such'"),
        ('remove_terms = ["kittens"]\n', "'kittens' is in no rule"),
        ('[[rules]]\nid = "x"\ncategory = "c"\n', "exactly one of terms or all_of"),
        ('[[rules]]\nid = "x"\ncategory = "c"\nterms = ["ok", 3]\n', "must hold strings, got 3"),
        ('[[rules]]\nid = "x"\ncategory = "c"\nterms = ["..."]\n', "has no words"),
        ('[[rules]]\nid = "Bad Id"\ncategory = "c"\nterms = ["a"]\n', "'Bad Id'"),
        ('[[rules]]\nid = "x"\ncategory = "c"\nall_of = [["a"]]\n', "at least two lists"),
        ('[[rules]]\nid = "x"\ncategory = "c"\nwithin = 0\nall_of = [["a"], ["b"]]\n', "within"),
        ('[[rules]]\nid = "hate.slurs"\ncategory = "c"\nterms = ["a"]\n', "already in the built-in policy"),
        ("log_text = 0\n", "log_text must be true or false"),
    ],
)
def test_a_bad_policy_file_is_one_line_naming_the_file_and_the_fault(tmp_path: Path, text: str, needed: str) -> None:
    path = _tenant_file(tmp_path, text)
    with pytest.raises(PolicyError) as err:
        moderation.load_policies(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and needed in message and "\n" not in message, message


def test_serve_does_not_start_on_a_bad_policy_file(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    path = _tenant_file(policies, "remove_rules = [\n")
    run = subprocess.run(
        [sys.executable, "-m", "noor.cli", "serve", "--workers", "0", "--port", "1"],
        env={**os.environ, "NOOR_DATA_DIR": str(tmp_path / "data"), "NOOR_MODERATION_POLICY_DIR": str(policies)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and str(path) in lines[0] and "not valid TOML" in lines[0], (
        run.stderr
    )


def _png_with_text(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_itxt(key, value)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 60, 90)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _jpeg_with_description(text: str) -> bytes:
    exif = Image.Exif()
    exif[270] = text  # ImageDescription
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 60, 90)).save(out, format="JPEG", exif=exif)
    return out.getvalue()


def test_text_in_an_uploaded_images_metadata_is_moderated() -> None:
    files = {
        "acme/uploads/a.png": _png_with_text(Description="راية داعش فوق جبل"),
        "acme/uploads/b.jpg": _jpeg_with_description("a beheading in the desert"),
        "acme/uploads/c.png": _png_with_text(Description="a calm lake at dawn"),
    }
    assert moderation.metadata_texts(files["acme/uploads/a.png"]) == ["راية داعش فوق جبل"]
    assert moderation.metadata_texts(files["acme/uploads/b.jpg"]) == ["a beheading in the desert"]
    policies = moderation.Policies(BUILTIN)

    def screen(key: str) -> Decision:
        task = {"prompt": "the camera pans slowly", "start": {"asset": key}}
        return moderation.screen_task(task, "acme", files.__getitem__, policies)

    assert screen("acme/uploads/a.png").category == "terrorism"
    assert screen("acme/uploads/b.jpg").category == "graphic_violence"
    assert screen("acme/uploads/c.png").allowed


def test_every_decision_is_logged_and_without_the_text_for_a_tenant_that_asks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tenant_file(tmp_path, "log_text = false\n", "quiet")
    policies = moderation.load_policies(tmp_path)
    task = {"prompt": "daesh parade", "negative_prompt": "blurry"}
    with caplog.at_level(logging.INFO, "noor.trust.moderation"):
        assert not moderation.screen_task(task, "quiet", policies=policies).allowed
        assert not moderation.screen_task(task, "loud", policies=policies).allowed
        assert moderation.screen_task({"prompt": "a quiet lake"}, "quiet", policies=policies).allowed
    quiet, loud, allowed = (r.__dict__ for r in caplog.records)
    assert {k: quiet[k] for k in ("tenant", "stage", "allowed", "category", "rule")} == {
        "tenant": "quiet",
        "stage": "request",
        "allowed": False,
        "category": "terrorism",
        "rule": "terrorism.terms",
    }
    assert "texts" not in quiet and "daesh" not in json.dumps(quiet, default=str)
    assert loud["texts"] == ["daesh parade", "blurry"] and loud["tenant"] == "loud"
    assert allowed["allowed"] is True and "texts" not in allowed


def _classifier(answer: Any, fail_open: bool = False, status: int = 200) -> tuple[Classifier, list[Any]]:
    seen: list[Any] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(status, json=answer)

    client = httpx.Client(transport=httpx.MockTransport(handle))
    return Classifier("http://classifier.test/v1/check", fail_open=fail_open, client=client), seen


def test_frames_go_to_the_external_checker_and_its_refusal_is_the_jobs_reason() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (20, 16, 24, 3), dtype=np.uint8)
    checker, seen = _classifier({"allowed": False, "category": "violence", "rule": "gore"})
    decision = moderation.check_frames(frames, [checker])
    assert decision == Decision(False, "violence", "external.gore")
    assert decision.reason == "content_moderated: violence (rule external.gore)"
    sent = seen[0]
    assert (sent["width"], sent["height"], len(sent["frames"])) == (24, 16, 8)  # 8 of the 20, evenly spaced
    assert Image.open(io.BytesIO(base64.b64decode(sent["frames"][0]))).size == (24, 16)
    ok, _ = _classifier({"allowed": True})
    assert moderation.check_frames(frames, [ok]).allowed
    assert moderation.check_frames(frames, []).allowed  # no checker configured: outputs are not checked


@pytest.mark.parametrize("answer", [httpx.ConnectTimeout("timed out"), {"verdict": "fine"}, "not json at all"], ids=str)
def test_a_classifier_that_cannot_answer_fails_closed_unless_told_open(answer: Any) -> None:
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    closed, _ = _classifier(answer)
    assert closed.check_frames(frames) == Decision(False, "unavailable", "external.unavailable")
    assert closed.check_texts(["a lake"]) == Decision(False, "unavailable", "external.unavailable")
    opened, _ = _classifier(answer, fail_open=True)
    assert opened.check_frames(frames).allowed


def test_the_classifier_also_judges_a_requests_texts_after_the_policy() -> None:
    classifier, seen = _classifier({"allowed": False, "category": "spam", "rule": "ads"})
    policies = moderation.Policies(BUILTIN)
    decision = moderation.screen_task({"prompt": "buy now"}, "acme", policies=policies, classifier=classifier)
    assert decision == Decision(False, "spam", "external.ads") and seen == [{"texts": ["buy now"]}]
    refused_first = moderation.screen_task({"prompt": "daesh"}, "acme", policies=policies, classifier=classifier)
    assert refused_first.category == "terrorism" and len(seen) == 1  # the policy refused: no call


# --- through the API ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "د.ا.ع.ش fighters on parade"},
        {"prompt": "a calm lake", "negative_prompt": "blurry, raghead"},
    ],
    ids=["prompt", "negative_prompt"],
)
def test_a_refused_prompt_is_a_400_before_anything_is_charged(api: dict[str, Any], body: dict[str, Any]) -> None:
    c, auth = api["client"], api["auth"]
    before = c.get("/credits", headers=auth).json()["credit_balance"]
    r = c.post("/dream-machine/v1/generations/video", json={"model": "ray-2", **body}, headers=auth)
    assert r.status_code == 400 and r.json() == {"detail": "Contains blacklisted words"}, r.text
    assert c.get("/credits", headers=auth).json()["credit_balance"] == before
    assert c.get("/dream-machine/v1/generations", headers=auth).json()["generations"] == []
    (entry,) = audit.entries(api["store"], event="moderation.refused")
    assert entry.tenant == "acme" and json.loads(entry.fields)["category"] in ("terrorism", "hate")
    assert "prompt" not in entry.fields and "calm lake" not in entry.fields
    ok = c.post("/dream-machine/v1/generations/video", json={"model": "ray-2", "prompt": "a calm lake"}, headers=auth)
    assert ok.status_code == 201, ok.text


def test_the_openai_videos_route_refuses_in_its_own_shape(api: dict[str, Any]) -> None:
    c, auth = api["client"], api["auth"]
    before = c.get("/credits", headers=auth).json()["credit_balance"]
    r = c.post("/v1/videos", json={"prompt": "a p o r n clip", "model": "sora-2"}, headers=auth)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "Contains blacklisted words"
    assert r.json()["error"]["code"] == "moderation_blocked"
    assert c.get("/credits", headers=auth).json()["credit_balance"] == before


def test_a_world_sessions_prompt_is_moderated_too(api: dict[str, Any]) -> None:
    c, auth = api["client"], api["auth"]
    r = c.post("/v1/worlds/sessions", json={"prompt": "a city under راية داعش"}, headers=auth)
    assert r.status_code == 400 and r.json() == {"detail": "Contains blacklisted words"}, r.text
    assert c.get("/v1/worlds/sessions", headers=auth).json()["data"] == []
