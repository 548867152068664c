"""Headless Chromium as the tests run it: no sandbox (root in CI), no GPU, and no background
networking (this machine's closed network refuses it, many connections at a time)."""

from __future__ import annotations

from pathlib import Path


def chromium(binary: str, profile: Path, width: int, height: int) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ]
