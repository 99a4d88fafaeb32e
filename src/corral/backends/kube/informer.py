"""A cache of one kind of Kubernetes object, kept current by a watch (what client-go calls an informer).

``start`` lists the objects (so the cache is complete when it returns), then a thread watches from the
list's ``resourceVersion`` (renewing the watch from the last version seen, bookmarks included): each
event updates the cache and calls ``on_change``. When the server no longer has that version (410 Gone:
etcd compacted it, or the watch cache moved past it) the thread lists again; other errors (the server
restarting) are retried after a pause. Reads take a copy under a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

WATCH_SECONDS = 10
"""How long one watch request lasts on the server before it is renewed (and ``stop`` is noticed)."""
RETRY_SECONDS = 1.0
GONE = 410


class Informer:
    def __init__(
        self, lister: Callable[..., Any], on_change: Callable[[], None] | None = None, **selection: Any
    ) -> None:
        """``lister``: a client ``list_*`` method (it also serves the watch); ``selection``: its
        arguments (``namespace``, ``label_selector``, ``field_selector``)."""
        self._lister = lister
        self._selection = selection
        self._on_change = on_change
        self._items: dict[tuple[str, str], Any] = {}
        self._version = ""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.relists = 0
        """How often the watch had to list again (410 Gone): for tests and metrics."""

    def start(self) -> None:
        self._list()
        self._thread = threading.Thread(target=self._run, name="corral-kube-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items.values())

    def _list(self) -> None:
        answer = self._lister(**self._selection)
        with self._lock:
            self._items = {_key(item): item for item in answer.items}
            self._version = answer.metadata.resource_version or ""

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._watch()
            except ApiException as error:
                if error.status == GONE:
                    self._relist()
                    continue
                log.warning("kubernetes watch failed (%s); retrying", error.reason)
                self._stopped.wait(RETRY_SECONDS)
            except Exception as error:  # the connection dropped, the server restarts: try again
                if self._stopped.is_set():
                    return
                log.warning("kubernetes watch failed (%s); retrying", error)
                self._stopped.wait(RETRY_SECONDS)

    def _watch(self) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self._lister,
            resource_version=self._version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
            **self._selection,
        ):
            if self._stopped.is_set():
                stream.stop()
                return
            kind, item = event["type"], event["object"]  # an ERROR event is raised as ApiException
            if kind == "BOOKMARK":  # only a newer resourceVersion to resume from
                raw = event.get("raw_object") or {}
                with self._lock:
                    self._version = raw.get("metadata", {}).get("resourceVersion") or self._version
                continue
            with self._lock:
                self._version = item.metadata.resource_version or self._version
                if kind == "DELETED":
                    self._items.pop(_key(item), None)
                else:
                    self._items[_key(item)] = item
            if self._on_change is not None:
                self._on_change()

    def _relist(self) -> None:
        self.relists += 1
        self._list()
        if self._on_change is not None:
            self._on_change()


def _key(item: Any) -> tuple[str, str]:
    return (item.metadata.namespace or "", item.metadata.name)
