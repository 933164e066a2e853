"""Where the repository's data directories live (models/, targets/ sit beside the edgekit package)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # edgekit/core/paths.py -> the repository
MODELS_DIR = REPO_ROOT / "models"
TARGETS_DIR = REPO_ROOT / "targets"
