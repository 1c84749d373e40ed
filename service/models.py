"""Which model version serves: initial load, pinned or newest version, and atomic hot reload."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from service.artifact import list_versions, resolve_model_root
from service.errors import ArtifactError, NotReady
from service.inference import LoadedModel, load_model
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, settings: Settings, metrics: ServiceMetrics):
        self.settings = settings
        self.metrics = metrics
        self._current: LoadedModel | None = None
        self.last_error: str | None = None
        self.failed_versions: set[str] = set()
        self._lock = asyncio.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")

    @property
    def current(self) -> LoadedModel:
        if self._current is None:
            raise NotReady("no model is loaded yet")
        return self._current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def wanted_version(self) -> tuple[str, str]:
        """(model root, version) to serve: the pinned version, else the newest one."""
        root = resolve_model_root(self.settings.model_dir, self.settings.model_name)
        if self.settings.model_version:
            return str(root), self.settings.model_version
        versions = [v for v in list_versions(root) if v not in self.failed_versions]
        if not versions:
            raise ArtifactError(f"no loadable model version under {root}")
        return str(root), versions[-1]

    async def reload(self, force: bool = False) -> dict:
        """Loads the wanted version beside the current one, checks and warms it up, then swaps.
        A broken artifact leaves the current model serving and is reported."""
        async with self._lock:
            try:
                root, version = self.wanted_version()
            except ArtifactError as error:
                self.last_error = error.message
                if self._current is None:
                    raise
                return {"status": "unchanged", "error": error.message, **self.describe()}
            if self._current is not None and self._current.version == version and not force:
                return {"status": "unchanged", **self.describe()}
            path = f"{root}/{version}"
            try:
                model = await asyncio.get_running_loop().run_in_executor(
                    self._loader, lambda: load_model(
                        path, require_gpu=self.settings.require_gpu,
                        intra_op_threads=self.settings.intra_op_threads,
                        inter_op_threads=self.settings.inter_op_threads))
            except (ArtifactError, OSError, ValueError) as error:
                message = getattr(error, "message", str(error))
                self.metrics.reloads.labels(outcome="failure").inc()
                self.failed_versions.add(version)
                self.last_error = f"version {version}: {message}"
                log.error("model load failed, keeping %s: %s",
                          self._current.version if self._current else "nothing", self.last_error)
                if self._current is None:
                    raise
                return {"status": "failed", "error": self.last_error, **self.describe()}
            previous = self._current
            self._current = model  # one reference swap: a batch uses whichever model it picked up
            self.last_error = None
            self.metrics.reloads.labels(outcome="success").inc()
            self.metrics.set_model(model.name, model.version, model.provider)
            log.info("serving %s version %s on %s", model.name, model.version, model.provider)
            return {"status": "loaded", "previous_version": previous.version if previous else None,
                    **self.describe()}

    async def watch(self) -> None:
        interval = self.settings.reload_poll_seconds
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception:  # keep watching whatever happens to one attempt
                log.exception("model watch failed")

    def describe(self) -> dict:
        model = self._current
        return {"name": model.name if model else None, "version": model.version if model else None,
                "provider": model.provider if model else None, "last_error": self.last_error}

    def close(self) -> None:
        self._loader.shutdown(wait=False)
