"""The file-system UI at work: database changes into files, a person's edits into the database.

One thread does everything, in order: it follows the ``events`` table (every state change
writes a row) and re-renders the files those rows touch; watchdog's observer thread only
queues the paths a person changed, which the same loop reads after a short debounce and
applies through :mod:`cw.fsui.edits`. So cw's own writes and a person's edits never interleave: a
file a person changed is never overwritten before that change has been read (applied, or kept
aside), even when the database changes the same row meanwhile.

:func:`run` is the loop (``cw fsui`` runs it in the foreground; a server can run it in a
thread); :class:`Watcher` is its state and single steps, which tests drive directly.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import OperationalError as DatabaseBusy
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from cw.district import District
from cw.errors import CwError, UsageError
from cw.fsui import edits, mirror, place
from cw.fsui.cursor import EventCursor
from cw.fsui.debounce import Debounce
from cw.fsui.mirror import Doc, Ref
from cw.fsui.mirrordir import Found, MirrorDir
from cw.git import runner
from cw.settings import Settings
from cw.store import Store
from cw.store.read import EventRow, MessageRow, TaskRow
from cw.store.snapshot import Snapshot

logger = logging.getLogger(__name__)

#: How often the events table is polled for changes to render.
POLL_SECONDS = 0.2
#: Turns in a row the same events or saved file may fail (a busy database) before they are
#: given up with a warning: a failure that never passes must not stop everything else.
RETRY_TURNS = 50
STATE_FILE = "fsui-state.json"
LOCK_FILE = "fsui.lock"
_EDIT_EVENTS = frozenset({"created", "modified", "closed", "moved", "deleted"})
#: A submit, first or again: tasks added, edited or waiting anew without an event of their own.
WHOLE_PLAN_EVENTS = frozenset({"initiative.submitted", "initiative.resubmitted"})


@dataclass
class Tally:
    """What a watcher did, for ``cw fsui --once`` and tests."""

    written: int = 0
    applied: list[str] = field(default_factory=list)
    kept: list[tuple[str, str, Path]] = field(default_factory=list)  # (file, why, kept as)


class Watcher:
    """The mirror of one district's database in ``place.mirror_root(settings)``."""

    def __init__(
        self, settings: Settings, store: Store, dispatch: Callable[[], object] | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.snapshot = Snapshot(store.engine)
        self.dir = MirrorDir(place.mirror_root(settings), settings.state_dir / STATE_FILE)
        self.index: dict[str, Ref] = {}
        self.events = EventCursor(RETRY_TURNS)
        self.tally = Tally()
        self.pending = Debounce(self.dir.is_empty, RETRY_TURNS)
        self._dispatch = dispatch
        self.district = District(settings, store, dispatch=self.dispatch)
        self._gone: dict[str, Ref | None] = {}  # files removed as their rows went: by path
        # Edits applied whose files are not rendered again yet (by path: the bytes applied): a
        # step that fails in between must not read them as edits again ("nothing changed").
        self._handled: dict[str, bytes] = {}

    # -- the whole tree --------------------------------------------------------------------

    def sync_all(self) -> None:
        """Render every file; apply edits made while nobody watched; answer files too."""
        place.refuse_tracked(self.settings)
        self.dir.open()
        runner.exclude_path(self.settings.repo, f"/{self.settings.fsui_dir.strip('/')}/")
        self.events.start(self.snapshot)
        self.dir.remove_temp_files()
        self._sync_whole(settled=None)
        for rel in mirror.answer_files(self.dir.root):
            self._take_answer_file(rel)

    def render_all(self) -> list[Doc]:
        docs = [mirror.readme_doc(), self._status()]
        docs += [mirror.task_doc(t) for t in self.snapshot.tasks()]
        docs += [mirror.agent_doc(a) for a in self.snapshot.agents()]
        docs += [mirror.message_doc(m) for m in self.snapshot.messages()]
        return docs

    def _sync_whole(self, settled: Collection[str] | None = ()) -> None:
        """Every file (``settled`` as for :meth:`_sync`); the files of rows gone go too."""
        docs = self.render_all()
        self._sync(docs, settled)
        rendered = {doc.rel for doc in docs}
        gone = {rel: self.index.pop(rel) for rel in list(self.index) if rel not in rendered}
        self._forget_gone(gone)

    def _forget_gone(self, gone: dict[str, Ref]) -> None:
        """Files cw wrote for rows no longer in the database (``gone``: those it showed, by
        path) are removed; a person's edit of one is kept aside first, saying why."""
        for rel in [r for r in self.dir.known if r not in self.index]:
            self._gone[rel] = gone.get(rel)
            self._drop_gone(rel)
        self.dir.save()

    def _drop_gone(self, rel: str) -> None:
        found = self.dir.read(rel)
        if found.kind != "missing" and not self._ours(rel, found):
            ref = self._gone.get(rel)
            what = f"{ref.kind} {ref.id}" if ref else "what this file showed"
            self._keep(rel, f"{what} is no longer in the district", found)
        self.dir.remove(rel)

    # -- database -> files -----------------------------------------------------------------

    def follow(self) -> bool:
        """Render what the events since the last call touched; False when there were none."""
        events = self.events.read(self.snapshot)
        if not events:
            return False
        try:
            self._render_events(events)
        except Exception:
            self.events.failed(events)  # read again at the next turn
            raise
        self.events.seen(events)
        return True

    def _render_events(self, events: list[EventRow]) -> None:
        if any(e.kind in WHOLE_PLAN_EVENTS for e in events):
            self._sync_whole()
            return
        tasks = {e.task_id for e in events if e.task_id is not None}
        messages = {m for e in events if isinstance(m := e.data.get("message_id"), int)}
        self._sync(self._render_tasks(tasks) + self._render_messages(messages) + [self._status()])

    def _render_tasks(self, task_ids: Collection[int]) -> list[Doc]:
        if not task_ids:
            return []
        docs = [mirror.task_doc(t) for t in self.snapshot.tasks(task_ids)]
        docs += [mirror.agent_doc(a) for a in self.snapshot.agents(task_ids=task_ids)]
        docs += [mirror.message_doc(m) for m in self.snapshot.messages(task_ids=task_ids)]
        return docs

    def _render_messages(self, ids: Collection[int]) -> list[Doc]:
        return [mirror.message_doc(m) for m in self.snapshot.messages(ids)] if ids else []

    def _render(self, refs: Iterable[Ref]) -> list[Doc]:
        """The current documents of these rows (rows gone from the database: none)."""
        by_kind: dict[str, set[int]] = {}
        for ref in refs:
            by_kind.setdefault(ref.kind, set()).add(ref.id)
        docs = [mirror.readme_doc()] if "readme" in by_kind else []
        docs += [self._status()] if "status" in by_kind else []
        if "task" in by_kind:
            docs += [mirror.task_doc(t) for t in self.snapshot.tasks(by_kind["task"])]
        if "agent" in by_kind:
            docs += [mirror.agent_doc(a) for a in self.snapshot.agents(by_kind["agent"])]
        return docs + self._render_messages(by_kind.get("message", ()))

    def _status(self) -> Doc:
        return mirror.status_doc(self.snapshot.overview(mirror.OVERVIEW_LIMIT))

    def _sync(
        self,
        docs: list[Doc],
        settled: Collection[str] | None = (),
        handled: dict[str, bytes] | None = None,
    ) -> None:
        """Bring these files up to date.

        A person's change found in one is taken (applied or kept aside) when its path has
        settled (is in ``settled``; None: every path, as at start); otherwise the file is left
        alone until it has. ``handled``: edits applied already, which the new version replaces.
        """
        handled = {**self._handled, **(handled or {})}
        applied: dict[str, bytes] = {}
        outdated: list[tuple[Doc, bytes | None]] = []
        by_rel = {doc.rel: doc for doc in docs}
        fresh = {  # in folders not made yet: nothing there to read
            top: [by_rel[rel] for rel in rels] for top, rels in self.dir.new_folders(by_rel).items()
        }
        unseen = {doc.rel for group in fresh.values() for doc in group}
        for doc in docs:
            self.index[doc.rel] = doc.ref
            if doc.rel in unseen:
                continue
            found = self.dir.read(doc.rel)
            if found.is_file and found.data == doc.text.encode():
                self.dir.expect(doc.rel, doc.text)
            elif found.kind == "missing" or self._ours(doc.rel, found):
                outdated.append((doc, None))
            elif found.is_file and handled.get(doc.rel) == found.data:
                outdated.append((doc, found.data))
            elif settled is not None and doc.rel not in settled:
                self.pending.later(doc.rel)
            elif self._take_edit(doc.ref, doc.rel, found):
                applied[doc.rel] = found.data
            else:
                outdated.append((doc, found.data))
        self._write(outdated, fresh)
        self._rendered_over(outdated)
        if applied:
            self._handled.update(applied)
            refs = {self.index[rel] for rel in applied}
            self._sync([*self._render(refs), self._status()], (), applied)

    def _rendered_over(self, written: list[tuple[Doc, bytes | None]]) -> None:
        """Forget the edits applied whose files were written again just now."""
        for doc, replaced in written:
            if replaced is not None and self._handled.get(doc.rel) == replaced:
                del self._handled[doc.rel]

    def _ours(self, rel: str, found: Found) -> bool:
        return found.is_file and self.dir.is_ours(rel, found.data)

    def _write(
        self, docs: list[tuple[Doc, bytes | None]], fresh: dict[str, list[Doc]] | None = None
    ) -> None:
        """Write ``docs`` one by one (each with the edit it may replace), and the ``fresh``
        folders (by their topmost missing folder) whole."""
        fresh = fresh or {}
        for doc in [d for d, _ in docs] + [d for group in fresh.values() for d in group]:
            self.dir.expect(doc.rel, doc.text)
        self.dir.save()  # before the files: a crash in between leaves nothing unexplained
        for top, group in fresh.items():
            if self.dir.write_folder(top, {d.rel: d.text for d in group}):
                self.tally.written += len(group)
            else:  # made meanwhile: one by one, as any other
                docs = docs + [(d, None) for d in group]
        for doc, handled in docs:
            if self.dir.write(doc.rel, doc.text, handled):
                self.tally.written += 1
            else:  # a person saved it at that very moment
                self.pending.later(doc.rel)

    # -- files -> database -----------------------------------------------------------------

    def _take_edit(self, ref: Ref, rel: str, found: Found) -> bool:
        """Apply a person's edit of ``rel``; keep it aside when refused. True when applied."""
        try:
            text = edits.text_of(found, self.dir.max_bytes)
            row = self._row(ref)
            intent = edits.read(ref, text, row)
            said = edits.apply(self.district, intent)
        except CwError as exc:  # refused, by the edit's own checks or by the store
            self._keep(rel, str(exc), found)
            return False
        logger.info("%s: %s", rel, said)
        self.tally.applied.append(f"{rel}: {said}")
        return True

    def _row(self, ref: Ref) -> TaskRow | MessageRow | None:
        if ref.kind == "task":
            return next(iter(self.snapshot.tasks([ref.id])), None)
        if ref.kind == "message":
            return next(iter(self.snapshot.messages([ref.id])), None)
        return None

    def _keep(self, rel: str, why: str, found: Found) -> None:
        kept = self.dir.keep_aside(rel, edits.note(rel, why), found)
        logger.warning("%s: edit not applied (%s); kept as %s", rel, why, kept.name)
        self.tally.kept.append((rel, why, kept))

    def _take_answer_file(self, rel: str) -> None:
        """``messages/<id>.answer.md``: its whole text answers message <id>; then it goes."""
        message_id = mirror.answer_file_message(rel)
        found = self.dir.read(rel)
        if message_id is None or found.kind == "missing":
            return
        try:
            answer = mirror.normal(edits.text_of(found, self.dir.max_bytes))
            if not answer:
                return  # an empty file being created: wait for its text
            intent = edits.Intent(Ref("message", message_id), "answer", answer=answer)
            said = edits.apply(self.district, intent)
        except CwError as exc:
            self._keep(rel, str(exc), found)
            self.dir.remove(rel)
            return
        self.dir.remove(rel)
        logger.info("%s: %s", rel, said)
        self.tally.applied.append(f"{rel}: {said}")

    def dispatch(self) -> None:
        if self._dispatch is None:
            return
        try:
            self._dispatch()
        except CwError as exc:
            logger.warning("could not dispatch (%s); `cw dispatch` or the beat will", exc)

    # -- the loop --------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Queue every file that differs from what cw last wrote (or is gone), and every answer
        file: an edit saved between the first sync and the observer's start is not missed."""
        for rel in list(self.dir.known):
            found = self.dir.read(rel)
            if not (found.is_file and self.dir.is_latest(rel, found.data)):
                self.pending.changes.put(rel)
        for rel in mirror.answer_files(self.dir.root):
            self.pending.changes.put(rel)

    def notice(self, path: str) -> None:
        """A path changed (any thread): queue it if it is one of ours to look at."""
        rel = self.dir.relative(path)
        if rel is not None and not self.dir.ignored(rel):
            self.pending.changes.put(rel)

    def settle(self, *, force: bool = False) -> int:
        """Look at every path quiet for the debounce time (all of them with ``force``); should
        that fail (a busy database), they are looked at again at the next turn."""
        ready = self.pending.take(force=force)
        try:
            self._look_at(ready)
        except Exception:
            self.pending.again(ready)
            raise
        self.pending.done(ready)
        return len(ready)

    def _look_at(self, ready: list[str]) -> None:
        refs: set[Ref] = set()
        for rel in ready:
            if mirror.answer_file_message(rel) is not None:
                self._take_answer_file(rel)
            elif rel in self._gone and rel not in self.index:
                self._drop_gone(rel)
            else:
                refs.update(self._touched(rel))
        if refs:
            self._sync(self._render(refs), settled=ready)

    def _touched(self, rel: str) -> list[Ref]:
        """The rows whose files a change at ``rel`` may concern (none: our own last write)."""
        ref = self.index.get(rel)
        if ref is None:  # a directory deleted or moved away: the files that were in it
            return [r for p, r in self.index.items() if p.startswith(rel + "/")]
        found = self.dir.read(rel)
        return [] if found.is_file and self.dir.is_latest(rel, found.data) else [ref]

    def step(self, timeout: float = POLL_SECONDS) -> bool:
        """One turn of the loop: wait for changes, apply the settled ones, follow the events.

        False when the directory itself was gone and had to be written again (a new directory
        needs a new observer).
        """
        self.pending.wait(min(timeout, self.pending.next_due(POLL_SECONDS)))
        if self.dir.replaced():
            logger.warning("%s was removed or replaced: writing it again", self.dir.root)
            self.sync_all()
            return False
        self.settle()
        self.follow()
        self.dir.save()
        return True


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _EDIT_EVENTS:
            return
        if event.is_directory and event.event_type not in ("deleted", "moved"):
            return
        self.watcher.notice(os.fsdecode(event.src_path))
        if event.dest_path:
            self.watcher.notice(os.fsdecode(event.dest_path))


def run(
    settings: Settings,
    stop: threading.Event,
    *,
    dispatch: Callable[[Store], Callable[[], object]] | None = None,
    ready: Callable[[Watcher], None] | None = None,
) -> None:
    """Mirror the district until ``stop`` is set. ``dispatch(store)`` makes the function that
    sends what became ready (none: nothing is sent); ``ready`` is called once mirrored."""
    with _watcher(settings, dispatch) as watcher:
        watcher.sync_all()
        while not stop.is_set():
            with _observing(watcher):
                watcher.catch_up()
                if ready is not None:
                    ready(watcher)
                    ready = None
                while not stop.is_set() and _turn(watcher):
                    pass
        watcher.dir.save()


def once(
    settings: Settings, dispatch: Callable[[Store], Callable[[], object]] | None = None
) -> Watcher:
    """Write the files and apply the edits made meanwhile, then stop (``cw fsui --once``)."""
    with _watcher(settings, dispatch) as watcher:
        watcher.sync_all()
        return watcher


@contextmanager
def _watcher(
    settings: Settings, dispatch: Callable[[Store], Callable[[], object]] | None
) -> Iterator[Watcher]:
    """The district's one watcher, with its own store."""
    store = Store.open(settings.require_database().db_url)
    try:
        with _only_watcher(settings):
            yield Watcher(settings, store, dispatch(store) if dispatch else None)
    finally:
        store.close()


def _turn(watcher: Watcher) -> bool:
    try:
        return watcher.step()
    except (OSError, DatabaseBusy) as exc:
        logger.warning("fsui: %s; trying again", exc)
        time.sleep(POLL_SECONDS)
        return True


@contextmanager
def _observing(watcher: Watcher) -> Iterator[None]:
    # watchdog warns (from its own thread) when a watched directory is deleted and made again
    # at once, which the mirror does when a person deletes a folder; the watch is kept.
    warnings.filterwarnings("ignore", "Callback with id .* already exists", RuntimeWarning)
    observer = Observer()
    observer.schedule(_Handler(watcher), str(watcher.dir.root), recursive=True)
    observer.start()
    try:
        yield
    finally:
        # Its emitter may log an error about events that arrive while it stops: nothing lost.
        emitter_log = logging.getLogger("watchdog.observers.inotify")
        level = emitter_log.level
        emitter_log.setLevel(logging.CRITICAL)
        observer.stop()
        observer.join(timeout=10)
        emitter_log.setLevel(level)


@contextmanager
def _only_watcher(settings: Settings) -> Iterator[None]:
    """One watcher per district: a second one would fight the first over the same files."""
    path = settings.lock_dir / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another cw fsui (or cw --server) already mirrors {place.mirror_root(settings)}"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
