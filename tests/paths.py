"""Where the tests find the repository and the shared, read-only data beside it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT.parent / "shared"  # tokenizers/ and data/ (see SOURCES.md there); tests skip without it
CONFIGS = ROOT / "configs"
