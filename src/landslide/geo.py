"""rasterio, an optional dependency (the ``geo`` extra), imported where a map or a scene needs it."""

from __future__ import annotations

from typing import Any

from landslide.errors import SceneError


def import_rasterio() -> Any:
    """rasterio, or a clear error saying how to install it."""
    try:
        import rasterio
    except ImportError:  # pragma: no cover - depends on the environment
        raise SceneError('landslide maps need rasterio: pip install -e ".[geo]"') from None
    return rasterio
