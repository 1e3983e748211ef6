#!/usr/bin/env python3
"""The web page of `pocketsd serve` in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): start the server on the tiny model, open the page
at a phone's width, fill the prompt and options, click Generate, check that progress
appeared and that the gallery image decoded, and save a screenshot.

    tools/browser-test.py --pocketsd .build/release/pocketsd --model tiny.pdm \
        [--screenshot docs/images/server.png] [--json]

Exit status: 0 when every check passed, 1 otherwise (each failure printed on one line).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time


def start_server(pocketsd, model):
    proc = subprocess.Popen([pocketsd, "serve", "-m", model, "--port", "0", "--threads", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://[^ ]+:(\d+)/", line)
    if not match:
        proc.kill()
        raise SystemExit("pocketsd serve did not start: " + line + proc.stderr.read())
    return proc, int(match.group(1))


def make_driver(width, height):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(flag)
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pocketsd", default=".build/release/pocketsd")
    parser.add_argument("--model", required=True, help="a .pdm model (the tiny test model)")
    parser.add_argument("--screenshot", default="docs/images/server.png")
    parser.add_argument("--width", type=int, default=420, help="window width (a phone's)")
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    failures = []
    results = {}

    def check(ok, message):
        if not ok:
            failures.append(message)
            print("FAIL: " + message, file=sys.stderr)

    server, port = start_server(args.pocketsd, args.model)
    driver = None
    try:
        driver = make_driver(args.width, args.height)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        # The sampler list comes from the API once the page has loaded.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sampler option")) >= 7)
        check(driver.find_element(By.ID, "model").text.startswith("Model:"), "the model name is not shown")

        driver.find_element(By.ID, "prompt").send_keys("a lighthouse on a cliff at dawn, watercolor")
        driver.find_element(By.TAG_NAME, "summary").click()
        for field, value in (("negative", "blurry"), ("images", "2"), ("steps", "40"), ("guidance", "7.5"),
                             ("seed", "1234"), ("width", "128"), ("height", "128")):
            element = driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "#sampler option[value='Euler a'], #sampler option").click()
        # Record what the progress card shows while the job runs.
        driver.execute_script("""
            window.seenProgress = [];
            new MutationObserver(() => window.seenProgress.push(document.getElementById('statusText').textContent))
              .observe(document.getElementById('statusText'), {childList: true, characterData: true, subtree: true});
            window.seenPreview = false;
            new MutationObserver(() => { window.seenPreview = true; })
              .observe(document.getElementById('preview'), {attributes: true, attributeFilter: ['src']});
        """)
        started = time.monotonic()
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery figure img")) == 2
                   or d.find_element(By.ID, "error").is_displayed())
        results["seconds_to_gallery"] = round(time.monotonic() - started, 2)
        check(not driver.find_element(By.ID, "error").is_displayed(),
              "the page shows an error: " + driver.find_element(By.ID, "error").text)
        images = driver.find_elements(By.CSS_SELECTOR, "#gallery figure img")
        check(len(images) == 2, f"expected 2 gallery images, got {len(images)}")
        for img in images:
            natural = driver.execute_script("return [arguments[0].complete, arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
            check(natural == [True, 128, 128], f"a gallery image did not decode at 128x128: {natural}")
        captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#gallery figcaption")]
        check(any("Seed 1234" in c for c in captions) and any("Seed 1235" in c for c in captions),
              f"the captions lack the seeds: {captions}")
        links = driver.find_elements(By.CSS_SELECTOR, "#gallery figcaption a[download]")
        check(len(links) == 2 and all(l.get_attribute("href").startswith("data:image/png;base64,") for l in links),
              "download links missing")
        seen = driver.execute_script("return window.seenProgress")
        results["progress_texts"] = sorted(set(seen))[:8]
        check(any(re.match(r"Step \d+ of \d+", s) for s in seen), f"no 'Step n of N' progress was shown: {seen[:5]}")
        check(driver.execute_script("return window.seenPreview"), "no live preview was shown")

        # An error shows as a message, not a blank page.
        width = driver.find_element(By.ID, "width")
        width.clear()
        width.send_keys("100")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
        error_text = driver.find_element(By.ID, "error").text
        results["error_message"] = error_text
        check("width" in error_text, f"the error does not name the field: {error_text}")
        width.clear()
        width.send_keys("128")
        driver.execute_script("document.getElementById('error').style.display = 'none'; window.scrollTo(0, 0)")

        # Cancel: the aborted request's job stops and the page says so.
        steps = driver.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("150")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_element(By.ID, "status").is_displayed())
        time.sleep(0.5)
        driver.find_element(By.ID, "cancel").click()
        wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
        check("Cancelled" in driver.find_element(By.ID, "error").text, "cancel did not report")
        deadline = time.monotonic() + 30
        idle = False
        while time.monotonic() < deadline and not idle:
            state = json.loads(driver.execute_script(
                "const r = await fetch('sdapi/v1/progress?skip_current_image=true'); return await r.text();"))
            idle = state["state"]["job_count"] == 0
            time.sleep(0.2)
        check(idle, "the cancelled job kept running")

        driver.execute_script("document.getElementById('error').style.display = 'none'; window.scrollTo(0, 0)")
        steps.clear()
        steps.send_keys("40")
        os.makedirs(os.path.dirname(args.screenshot) or ".", exist_ok=True)
        driver.save_screenshot(args.screenshot)
        results["screenshot"] = args.screenshot
    finally:
        if driver is not None:
            driver.quit()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = None
        check(code == 0, f"pocketsd serve exited with {code} on SIGTERM")

    results["failures"] = failures
    results["passed"] = not failures
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(("browser test passed" if not failures else f"browser test FAILED ({len(failures)})")
              + f": gallery after {results.get('seconds_to_gallery')} s")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
