"""The console in a real browser: Debian's Chromium driven by Playwright for
Python (PyPI `playwright`, no browser download), against a real trainer and
gateway training the tiny model. Signs in, uploads a broken and a good
dataset and reads their reports, sees a refused job's field violations, starts
a job and watches its loss chart gain points, reloads mid-job without
duplicated points, signs out. Screenshots go to build/test-artifacts/console
(or $TUNEWIRE_TEST_ARTIFACTS), which CI can keep."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from tunewire.gateway.console.session import COOKIE

from ..gateway.conftest import start_stack

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags BRIEF.md gives for this machine's Chromium (no sandbox as root, no
# background network noise).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = (
    Path(os.environ.get("TUNEWIRE_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts")) / "console"
)
STEPS = 80

playwright = pytest.importorskip(
    "playwright.async_api", reason="playwright (test extra) is not installed"
)
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"
    ),
]


async def points(page) -> int:
    return await page.eval_on_selector("#chart-loss", "e => Number(e.dataset.points)")


async def steps(page) -> list[int]:
    text = await page.eval_on_selector("#chart-loss", "e => e.dataset.steps")
    return [int(s) for s in text.split(",") if s]


async def steps_and_points(page) -> tuple[list[int], int]:
    text, count = await page.eval_on_selector(
        "#chart-loss", "e => [e.dataset.steps, Number(e.dataset.points)]"
    )
    return [int(s) for s in text.split(",") if s], count


async def wait_until(condition, what: str, timeout: float = 120):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await condition()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
    return value


@pytest.fixture
async def browser_page():
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, context, errors
        await browser.close()


async def test_console_end_to_end(tmp_path, tiny_model_dir, browser_page):
    page, context, errors = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def shot(name: str):
        await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"instruction": "Say hi", "output": "Hi"}\n'
        '{"instruction": "Say bye"}\n'
        '{"instruction": "Count", "output": "1 2 3"}\n'
    )
    stack = await start_stack(tmp_path, tiny_model_dir, max_running_jobs=1)
    key = stack.keys["alice"]
    try:
        # Sign in: a wrong key is refused with a message, the right one opens the jobs.
        await page.goto(f"{stack.url}/")
        await page.fill("#api-key", "tw_wrong")
        await page.click("#sign-in-form button")
        await page.wait_for_selector("#sign-in-error:not([hidden])")
        await page.fill("#api-key", key)
        await page.click("#sign-in-form button")
        await page.wait_for_selector("#jobs-table table")
        [cookie] = [c for c in await context.cookies() if c["name"] == COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert key not in await page.content()
        assert COOKIE not in await page.evaluate("document.cookie")
        await shot("01-jobs")

        # A broken dataset: its report names line, field and code, and shows the record.
        await page.click("#nav a[data-view=datasets]")
        await page.set_input_files("#dataset-file", str(broken))
        await page.click("#upload-button")
        await page.wait_for_selector("#report-valid")
        assert await page.text_content("#report-valid") == "not valid"
        row = page.locator("#validation-report tr[data-line='2']").first
        assert "MISSING_FIELD" in await row.text_content() and "output" in await row.text_content()
        await row.locator("button").click()
        await page.wait_for_selector("#offending-record:has-text('Say bye')")
        assert await page.get_attribute("#upload-progress", "value") == "100"
        await shot("02-dataset-report")

        # The bundled example, previewed with the tiny model's chat template.
        await page.set_input_files("#dataset-file", str(ROOT / "examples" / "alpaca_example.json"))
        await page.fill("#dataset-tokenizer", str(tiny_model_dir))
        await page.click("#upload-button")
        await page.wait_for_selector("#report-valid")
        assert await page.text_content("#report-valid") == "valid"
        await page.wait_for_selector(".rendered mark")
        dataset_id = await page.text_content("#report-dataset-id")

        # A refused job: the pre-flight violations sit next to their fields.
        await page.click("#nav a[data-view=new]")
        await page.fill("#field-model", str(tiny_model_dir))
        await page.select_option("#field-dataset-dataset_id", dataset_id)
        for field, value in (
            ("hyperparameters-max_steps", str(STEPS)),
            ("hyperparameters-batch_size", "2"),
            ("hyperparameters-max_seq_length", "64"),
            ("hyperparameters-learning_rate", "0.002"),
            ("report_interval_steps", "1"),
            ("lora-rank", "0"),
        ):
            await page.fill(f"#field-{field}", value)
        await page.click("#create-job")
        await page.wait_for_selector("#field-lora-rank[aria-invalid=true]")
        assert "between 1 and 1024" in await page.text_content("#field-lora-rank-error")
        await shot("03-refused-job")

        # Fixed, it starts: the chart gains points while the job trains.
        await page.fill("#field-lora-rank", "4")
        await page.click("#create-job")
        await page.wait_for_selector("#chart-loss")
        first = await wait_until(lambda: points(page), "the first loss points")
        await wait_until(lambda: _more(points(page), first), "the loss chart to gain points")
        assert await page.text_content("#job-state") in ("running", "starting")
        await shot("04-job-training")

        # Reload mid-job: the replayed events add no duplicate points.
        await page.reload()
        await page.wait_for_selector("#chart-loss")
        await wait_until(lambda: points(page), "the points after the reload")
        # Read together: the job is still training, so points read after the steps may
        # already count steps that arrived in between.
        seen, shown = await steps_and_points(page)
        assert len(seen) == len(set(seen)) == shown and seen == sorted(seen)
        await page.wait_for_selector("#job-state:has-text('succeeded')", timeout=180_000)
        await wait_until(lambda: _equals(points(page), STEPS), "every step's point")
        assert await steps(page) == list(range(1, STEPS + 1))
        await shot("05-job-done")

        # The adapter downloads from the job page, with the session cookie.
        async with page.expect_download() as download:
            await page.click("#download-artifact")
        saved = tmp_path / "adapter.tar"
        await (await download.value).save_as(saved)
        with tarfile.open(saved) as tar:
            assert any(name.endswith("adapters.safetensors") for name in tar.getnames())

        # The playground: the same prompt to the base model and to the adapter.
        await page.click("#nav a[data-view=playground]")
        await page.fill("#play-max", "8")
        await page.click("#play-run")
        for side in ("#play-base", "#play-tuned"):
            await page.wait_for_selector(f"{side}:has-text('tokens/s')", timeout=120_000)
        await shot("06-playground")

        # Sign out: back to the form, and the old cookie opens nothing.
        await page.click("#sign-out")
        await page.wait_for_selector("#sign-in:not([hidden])")
        assert not [c for c in await context.cookies() if c["name"] == COOKIE and c["value"]]
        reply = await page.request.get(
            f"{stack.url}/v1/jobs", headers={"Cookie": f"{COOKIE}={cookie['value']}"}
        )
        assert (
            reply.status == 401
            and json.loads(await reply.text())["details"][0]["reason"] == "SESSION_EXPIRED"
        )
        await shot("07-signed-out")
    finally:
        await stack.close()
    assert not errors, errors


async def _more(value, than: int) -> bool:
    return (await value) > than


async def _equals(value, expected: int) -> bool:
    return (await value) == expected
