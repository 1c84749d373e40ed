"""Which model version serves: initial load, pinned or newest version, and atomic hot reload.

Every failure to load a version (a malformed artifact, a graph that breaks the contract, a warm-up
that fails, a version that would drop scenarios clients use) is reported, counted and leaves the
serving version in place. A failed version is not tried again until its files change, so a
directory caught half-copied, or repaired in place, loads on a later poll."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service.artifact import content_fingerprint, is_version_name, list_versions, resolve_model_root
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
        self.failed_versions: dict[str, tuple] = {}     # version -> fingerprint of the files that failed
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

    def _failed_unchanged(self, root: Path, version: str) -> bool:
        recorded = self.failed_versions.get(version)
        return recorded is not None and recorded == content_fingerprint(root / version)

    def wanted_version(self) -> tuple[Path, str]:
        """(model root, version) to serve: the pinned version, else the newest one that has not
        failed with its present files."""
        root = resolve_model_root(self.settings.model_dir, self.settings.model_name)
        pinned = self.settings.model_version
        if pinned:
            if not is_version_name(pinned):
                raise ArtifactError(f"SAINET_MODEL_VERSION={pinned!r} is not a version (versions are integers)")
            return root, pinned
        versions = [v for v in list_versions(root) if not self._failed_unchanged(root, v)]
        if not versions:
            raise ArtifactError(f"no loadable model version under {root}")
        return root, versions[-1]

    def _load(self, path: Path) -> LoadedModel:
        s = self.settings
        model = load_model(path, require_gpu=s.require_gpu, intra_op_threads=s.intra_op_threads,
                           inter_op_threads=s.inter_op_threads, precision=s.precision)
        serving = self._current
        if serving is not None and not s.allow_scenario_change:
            dropped = [x for x in serving.artifact.scenarios if x not in model.artifact.scenario_index]
            if dropped:
                raise ArtifactError(f"version {model.version} lacks the scenarios {dropped} that version "
                                    f"{serving.version} serves (set SAINET_ALLOW_SCENARIO_CHANGE=true to allow it)")
        return model

    async def reload(self, force: bool = False) -> dict:
        """Loads the wanted version beside the current one, checks and warms it up, then swaps.
        A version that fails leaves the current model serving and is reported; at start-up (nothing
        serving yet) the next older version is tried, and start-up fails only when none loads."""
        async with self._lock:
            while True:
                result = await self._reload_once(force)
                if result["status"] != "failed" or self._current is not None:
                    return result
                if self.settings.model_version:
                    raise ArtifactError(self.last_error)

    async def _reload_once(self, force: bool) -> dict:
        try:
            root, version = self.wanted_version()
        except ArtifactError as error:
            self.last_error = error.message
            if self._current is None:
                raise
            return {"status": "unchanged", **self.describe()}
        if self._current is not None and self._current.version == version and not force:
            return {"status": "unchanged", **self.describe()}
        path = root / version
        fingerprint = content_fingerprint(path)
        try:
            model = await asyncio.get_running_loop().run_in_executor(self._loader, self._load, path)
        except RuntimeError as error:
            if self._current is None and self.settings.require_gpu:
                raise   # SAINET_REQUIRE_GPU without CUDA: start-up must fail loudly
            return self._failed(version, fingerprint, str(error))
        except Exception as error:  # whatever a broken artifact makes a loader raise, it is a failed load
            return self._failed(version, fingerprint, getattr(error, "message", None) or repr(error))
        previous = self._current
        self._current = model  # one reference swap: a batch uses whichever model it picked up
        self.failed_versions.pop(version, None)
        if not any(int(v) > int(version) for v in self.failed_versions):
            self.last_error = None      # else it still tells why a newer version is not serving
        self.metrics.reloads.labels(outcome="success").inc()
        self.metrics.set_model(model.name, model.version, model.provider, model.precision)
        log.info("serving %s version %s on %s in %s", model.name, model.version, model.provider, model.precision)
        return {"status": "loaded", "previous_version": previous.version if previous else None,
                **self.describe()}

    def _failed(self, version: str, fingerprint: tuple, message: str) -> dict:
        self.metrics.reloads.labels(outcome="failure").inc()
        self.failed_versions[version] = fingerprint
        self.last_error = f"version {version}: {message}"
        log.error("model load failed, keeping %s: %s",
                  self._current.version if self._current else "nothing", self.last_error)
        return {"status": "failed", "error": self.last_error, **self.describe()}

    async def watch(self) -> None:
        interval = self.settings.reload_poll_seconds
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception:  # keep watching whatever happens to one attempt
                log.exception("model watch failed")

    def describe(self, reveal_paths: bool = True) -> dict:
        """The serving model; file-system paths only for callers allowed to see them."""
        model = self._current
        error = self.last_error
        if error and not reveal_paths:
            for path in sorted({str(self.settings.model_dir.resolve()), str(self.settings.model_dir)}, key=len,
                               reverse=True):
                error = error.replace(path, "<model_dir>")
        description = {"name": model.name if model else None, "version": model.version if model else None,
                       "provider": model.provider if model else None,
                       "precision": model.precision if model else None, "last_error": error}
        if reveal_paths:
            description["path"] = str(model.artifact.path) if model else None
        return description

    def close(self) -> None:
        self._loader.shutdown(wait=False)
