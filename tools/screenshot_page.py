"""Screenshot the first screen of a review page in headless Chromium (the README's picture of `make demo`'s page).

    python tools/screenshot_page.py demo-output/review.html docs/images/review.png --sort ood-desc
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from s3f_edge.testing import browser_missing, headless_chromium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="an .html page written by s3f-edge")
    parser.add_argument("png", type=Path, help="the screenshot to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--sort", default=None, help="a value of the page's sort menu to choose first, e.g. ood-desc")
    args = parser.parse_args()
    if not args.page.is_file():
        parser.error(f"no page at {args.page}; run make demo first")
    reason = browser_missing()
    if reason:
        parser.error(reason)
    driver = headless_chromium(args.width, args.height)
    try:
        driver.get(args.page.resolve().as_uri())
        driver.find_element("css selector", "body[data-ready=yes]")
        if args.sort:
            from selenium.webdriver.support.ui import Select

            Select(driver.find_element("id", "sort")).select_by_value(args.sort)
        args.png.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.png))
    finally:
        driver.quit()
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
