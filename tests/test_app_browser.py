"""The studio as a creator uses it: Debian's chromium driven by Playwright against the real app
(real motion extraction, real tiny model, real video files).

Recipe: ../shared/design/browser-tests.md. Screenshots of every step are kept in
tests/artifacts/ (look at them: a creator should understand the page without the README).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed "
                       "(apt-get install chromium chromium-driver; .ci/run does it)"),
]

# Small and fast settings on purpose: the flow is what is tested here, not the picture.
FAST = {"resolution": "64x64", "max_frames": 8, "steps": 2, "guidance": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_inputs(folder: Path) -> tuple:
    """A real photograph of a person (scikit-image's astronaut) and a driving clip made by
    moving it (rotation, zoom, pan), so the pose estimator finds a person in every frame."""
    import cv2
    import skimage.data
    from PIL import Image

    from xdyna_core.io import write_video

    img = skimage.data.astronaut()
    photo = folder / "astronaut.png"
    Image.fromarray(img).save(photo)
    h, w = img.shape[:2]
    frames = []
    for t in range(24):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 6 * np.sin(t / 4), 1 + 0.05 * np.sin(t / 6))
        m[0, 2] += 12 * np.sin(t / 3)
        frames.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    clip = write_video(folder / "dance.mp4", np.stack(frames), 15)
    return photo, Path(clip)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    os.environ["XDYNA_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    import app

    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield app, f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server[1])
    page.wait_for_selector("#photo input[type=file]", state="attached")
    yield page
    context.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def upload(page, photo, clip):
    page.set_input_files("#photo input[type=file]", str(photo))
    page.wait_for_selector("#photo img")
    page.set_input_files("#clip input[type=file]", str(clip))
    page.wait_for_selector("#clip video")


def set_fast_settings(page):
    page.click("#resolution input")
    page.get_by_role("option", name="64 × 64", exact=False).first.click()
    page.fill("#max_frames input[type=number]", str(FAST["max_frames"]))
    page.fill("#steps input[type=number]", str(FAST["steps"]))
    page.fill("#guidance input[type=number]", str(FAST["guidance"]))
    page.locator("#guidance input[type=number]").blur()


def wait_video(page, selector: str, timeout_s: float = 240) -> str:
    """The src of the <video> in `selector`, once it is there."""
    page.wait_for_selector(f"{selector} video[src]", timeout=timeout_s * 1000)
    return page.get_attribute(f"{selector} video", "src")


def download(page, url: str, dest: Path) -> Path:
    """Fetch a file the page shows, through the page's own context (same cookies, same origin)."""
    response = page.request.get(url)
    assert response.ok, f"{url}: HTTP {response.status}"
    dest.write_bytes(response.body())
    return dest


def test_extract_then_animate_in_chromium(page, server, inputs, tmp_path):
    from xdyna_core.io import read_video
    from app_view import DEFAULT_FPS

    photo, clip = inputs
    upload(page, photo, clip)
    set_fast_settings(page)

    page.click("#extract-btn")
    skeleton_src = wait_video(page, "#skeleton")
    wait_video(page, "#faces")
    page.wait_for_selector("#overlay img")
    facts = page.inner_text("#facts")
    assert "Person found" in facts and f"{FAST['max_frames']} of {FAST['max_frames']} frames" in facts
    skeleton = read_video(download(page, skeleton_src, tmp_path / "skeleton.mp4"))
    assert len(skeleton) == FAST["max_frames"] and skeleton.frames.shape[1] == skeleton.frames.shape[2] >= 64
    assert skeleton.frames.max() > 0  # a skeleton was drawn, not a black video
    shot(page, "app_step1_extracted")

    page.click("#animate-btn")
    # Progress text moves while the job runs ("Animating: step 1 of 2 ...").
    page.wait_for_function("() => /step \\d+ of \\d+|Loading|Preparing/i.test(document.body.innerText)",
                           timeout=120_000)
    src = wait_video(page, "#result")
    side_src = wait_video(page, "#side-by-side")
    page.wait_for_selector("#status strong")
    status = page.inner_text("#status")
    assert "Done in" in status and "re-used" in status  # the motion from step 1 was not extracted again

    # The browser can play it: metadata loaded, real duration, and time advances when played.
    duration = page.eval_on_selector("#result video", """v => new Promise(ok => {
        if (v.readyState >= 1) return ok(v.duration);
        v.addEventListener('loadedmetadata', () => ok(v.duration), {once: true});
        setTimeout(() => ok(-1), 15000); })""")
    expected = FAST["max_frames"] / float(DEFAULT_FPS)
    assert abs(duration - expected) < 0.2, duration
    played = page.eval_on_selector("#result video", """async v => { v.muted = true; await v.play();
        for (let i = 0; i < 50 && v.currentTime === 0; i++) await new Promise(r => setTimeout(r, 100));
        return v.currentTime; }""")  # playing: time moves within 5 s, even on a loaded machine
    assert played > 0

    # Download it through the page and check it with the project's own reader.
    video = read_video(download(page, src, tmp_path / "result.mp4"))
    assert len(video) == FAST["max_frames"] and video.fps == pytest.approx(float(DEFAULT_FPS), abs=0.01)
    assert video.frames.shape[1:3] == (64, 64)
    assert video.duration == pytest.approx(expected, abs=0.01)
    side = read_video(download(page, side_src, tmp_path / "side.mp4"))
    assert len(side) == FAST["max_frames"] and side.frames.shape[2] >= 3 * 64  # clip | skeleton | result
    links = page.locator("#downloads a").count()
    assert links >= 2
    shot(page, "app_step2_animated")


def test_not_a_video_shows_a_message_and_the_app_keeps_working(page, server, inputs, tmp_path):
    photo, clip = inputs
    not_a_photo = tmp_path / "selfie.png"
    not_a_photo.write_text("this is a text file, not a photo")
    page.set_input_files("#photo input[type=file]", str(not_a_photo))
    page.locator(".toast-body", has_text="selfie.png").first.wait_for(timeout=30_000)
    assert "not a photo" in page.locator(".toast-body", has_text="selfie.png").first.inner_text()

    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a text file, not a video")
    page.set_input_files("#photo input[type=file]", str(photo))
    page.wait_for_selector("#photo img")
    page.set_input_files("#clip input[type=file]", str(fake))
    page.wait_for_timeout(1000)
    set_fast_settings(page)
    # Reported on upload already, in words, naming the file ...
    page.locator(".toast-body", has_text="holiday.mp4").first.wait_for(timeout=60_000)
    assert "cannot be used" in page.inner_text("#facts")
    # ... and again if Extract is pressed anyway.
    page.click("#extract-btn")
    # (Gradio groups error toasts, so wait for an *error* toast that names the file.)
    error = page.locator(".toast-body", has_text="Error").filter(has_text="holiday.mp4")
    error.first.wait_for(timeout=60_000)
    assert "not a video" in error.first.inner_text()
    assert "Traceback" not in page.content()
    shot(page, "app_error_not_a_video")

    # Same page, a real clip now: extraction works.
    page.locator("#clip button[aria-label='Clear']").first.click()
    page.set_input_files("#clip input[type=file]", str(clip))
    page.wait_for_selector("#clip video")
    page.click("#extract-btn")
    wait_video(page, "#skeleton")
    assert "Person found" in page.inner_text("#facts")


def test_cancel_stops_the_generation_within_a_step(page, server, inputs):
    app, _ = server
    import app_view as studio
    from xdyna_core.animation import GENERATION_LOCK

    examples = studio.example_pairs()
    if examples:  # start from the first example, as a newcomer would
        page.locator("#examples tbody tr").first.click()
        page.wait_for_selector("#photo img")
        page.wait_for_selector("#clip video")
    else:
        upload(page, *inputs)
    set_fast_settings(page)
    # A long job (128 x 128, 50 steps, 2 windows, guidance on), so that it is surely still running
    # when the second visitor arrives and when Cancel is pressed (at 64 x 64 a quiet CPU can finish
    # it before the second visitor is queued).
    page.click("#resolution input")
    page.get_by_role("option", name="128 × 128", exact=False).first.click()
    page.fill("#steps input[type=number]", "50")
    page.fill("#max_frames input[type=number]", "24")
    page.fill("#guidance input[type=number]", "2")
    page.locator("#guidance input[type=number]").blur()
    page.click("#animate-btn")
    # Progress per step with the time left, shown on the result while the job runs.
    # (the tiny model's preset runs int(50 * strength) of the 50 steps, so the total is not 50)
    page.wait_for_function("() => /step \\d+ of \\d+.*left/.test(document.body.innerText)", timeout=180_000)
    shot(page, "app_progress")

    # A second visitor meanwhile waits in the queue (one generation at a time) and sees where.
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(server[1])
    other.wait_for_selector("#photo input[type=file]", state="attached")
    upload(other, *inputs)
    set_fast_settings(other)
    other.click("#animate-btn")
    other.wait_for_function("() => /queue/i.test(document.querySelector('#result').innerText)", timeout=60_000)
    assert "1/" in other.inner_text("#result")  # first in line
    shot(other, "app_queued")
    other.click("#cancel-btn")
    other.close()

    assert "Done" not in page.inner_text("#status")
    started = time.monotonic()
    page.click("#cancel-btn")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Stopped')")
    # The generation thread really stops (the lock is free again) within about one step.
    while GENERATION_LOCK.locked() and time.monotonic() - started < 30:
        time.sleep(0.1)
    assert not GENERATION_LOCK.locked()
    assert page.locator("#result video[src]").count() == 0
    shot(page, "app_cancelled")


def test_choosing_official_x_dyna_on_this_machine_is_explained(page):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: official X-Dyna is allowed here")
    page.click("#model input")
    page.get_by_role("option", name="Official X-Dyna", exact=False).first.click()
    page.wait_for_function("() => document.querySelector('#system').innerText.includes('needs a CUDA GPU')")
    # Its preset came with it: the official size and steps.
    page.wait_for_function("() => document.querySelector('#steps input[type=number]').value === '25'")
    assert "512 × 896" in page.input_value("#resolution input")
    page.click("#animate-btn")
    error = page.locator(".toast-body", has_text="Error").filter(has_text="CUDA GPU")
    error.first.wait_for(timeout=30_000)
    assert "embedded tiny model" in error.first.inner_text()
    shot(page, "app_official_without_gpu")


def test_choosing_a_dancer_by_clicking_on_them(page, inputs, tmp_path):
    """A clip with two people: the page shows them numbered from the left; a click on the right one
    sets 'Dancer to follow' to Dancer 2 (which /extract then receives as person 2)."""
    from test_people import A_LEFT, B_LEFT, FPS, _compose, _photos
    from xdyna_core.io import write_video

    clip = write_video(tmp_path / "duet.mp4", _compose(_photos(), [A_LEFT[:12], B_LEFT[:12]]), fps=FPS, crf=14)
    upload(page, inputs[0], clip)
    page.wait_for_selector("#dancers img", timeout=120_000)
    page.wait_for_function("() => { const i = document.querySelector('#dancers img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    assert "2 dancers" in page.inner_text("#dancers-note")
    img = page.locator("#dancers img")
    img.scroll_into_view_if_needed()  # mouse clicks are in viewport coordinates
    box = img.bounding_box()
    natural = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    # Dancer 2's box centre on the counting frame (Grace Hopper, right), in displayed pixels
    # (the image keeps its aspect inside its box).
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    left = box["x"] + (box["width"] - natural[0] * scale) / 2
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    page.mouse.click(left + (B_LEFT[0] + 75) * scale, top + 250 * scale)
    page.wait_for_function("() => document.querySelector('#dancer input').value === 'Dancer 2'", timeout=30_000)
    shot(page, "dancer_chosen")
