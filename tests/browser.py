"""Browser steps shared by the page tests and ``scripts/screenshot_web.py``."""

from __future__ import annotations

from typing import Any


def drag_axis_handle(page: Any, pixels: float) -> None:
    """Drag the review page's first axis handle ``pixels`` screen pixels outwards.

    The handle moves along the line from the ellipse's centre handle through it, so
    the axis grows and the centre and rotation stay put.
    """
    centre, end = (page.locator(f"#handle-{h}").bounding_box() for h in ("centre", "a"))
    cx, cy = centre["x"] + centre["width"] / 2, centre["y"] + centre["height"] / 2
    x, y = end["x"] + end["width"] / 2, end["y"] + end["height"] / 2
    n = ((x - cx) ** 2 + (y - cy) ** 2) ** 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels * (x - cx) / n, y + pixels * (y - cy) / n, steps=5)
    page.mouse.up()
