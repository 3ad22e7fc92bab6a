"""The streaming driver loop: slides -> plans -> window batches -> model actors -> slide writers.

Long-lived processes only: model actors, reader actors (plans, patch pairs) and writer actors
(each open slide has one ``SlideWriter`` in one of them), so no process starts per slide or batch.
All start together. Until a reader has started, the driver plans the first slide and reads its
batches (it has the slide reader loaded already; the readers take seconds to import it); then the
readers plan the next slides and read batches ahead. Each model actor gets batches as soon as it
has loaded its model (no waiting for the slowest one; a batch is tied to an actor only when sent).

Bounded everywhere, so memory stays flat for a cohort of any size: slides are planned lazily (at
most ``PLAN_AHEAD`` plans outstanding, only while the batch queue runs short), and at most
``max_in_flight`` batches are being read, segmented *or written* at once (default 2 per actor + 1):
a batch frees its slot when its slide's writer has taken its objects, so a slow writer slows
reading instead of filling memory. The loop never blocks on one thing: plans, batches, writer
calls and slide commits are all waited on together. A batch's objects reach the slide's writer
only from the call that completed, so a killed actor loses and duplicates nothing. Failures stay
with their slide (see ``executor.py``).
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError
from tqdm.auto import tqdm

from ..output_folder import partial_dir, remove_tree, slide_dir
from ..completion import previous_masks
from ..pipeline import SlidePlan, add_outcome, batched, by_level, completion_limits, plan_slide, read_jobs
from ..slide_result import RunContext, SlideResult, slide_summary
from ..scheduler import schedule_stats
from ..slides import SlideInfo
from .actors import BatchReport, SlideReaderActor, SlideWriterActor
from .errors import actor_start_error, original_error

#: Errors that mean "the model actor's process died", not "the batch raised".
_DEATHS = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)
#: Slides being planned at once (plans run as tasks: detectors, opening the slide).
PLAN_AHEAD = 2


class SlideFailedError(RuntimeError):
    """A slide failed and ``fail_fast`` was set."""


class ActorGoneError(RuntimeError):
    """A model actor died and did not come back: the run cannot go on."""


@dataclass
class _Batch:
    slide_id: str
    batch_id: int
    windows: list
    jobs: object = None  # the ref of its patch pairs, once reading them started ahead of sending it
    kills: int = 0  # times the model actor died while running it
    tries: int = 0  # times a call with it failed (died, refused, or its read's worker crashed)

    @property
    def suspect(self) -> bool:
        return self.kills > 0


@dataclass
class _SlideState:
    info: SlideInfo
    plan: SlidePlan
    writer: int  # index in CohortStream.writers
    batches_left: int
    thumbnail: object = None  # the ref of its QC thumbnail, read by a reader while it is segmented
    t0: float = 0.0
    pending: dict = field(default_factory=dict)  # cut masks of prompts being segmented again


class CohortStream:
    def __init__(self, todo, prompts, detector, actors, ready, output_dir, schedule, output, cfg, manifest, settings):
        self.todo, self.prompts, self.detector, self.actors = deque(todo), prompts, detector, actors
        # Model actors still loading: their "ready" ref -> actor index. They get no batch until ready;
        # meanwhile the first batches are read ahead (_dispatch), so the reads overlap the load.
        self.starting: dict = dict(zip(ready, range(len(actors))))
        self.t_start = time.perf_counter()
        self.first_ready_s: float | None = None  # seconds from the stream's start to the first actor ready
        self.last_batch_s: float | None = None
        self.output_dir, self.schedule, self.output, self.cfg = output_dir, schedule, output, cfg
        self.manifest = manifest
        cfg_run = manifest.config
        self.run_context = RunContext(cfg_run.get("schedule", {}), cfg_run.get("output", {}), cfg_run.get("segmenter", ""),
                              manifest.run_id, settings)
        self.label_mpp = output.label_mpp or schedule.hr_mpp
        self.max_in_flight = cfg.max_in_flight or 2 * len(actors) + 1
        self.plans: dict = {}  # plan ref -> SlideInfo
        self.states: dict[str, _SlideState] = {}
        self.queue: deque[_Batch] = deque()
        self.read_ahead = 0  # queued batches whose patch pairs are being read (see _dispatch)
        self.in_flight: dict = {}  # report ref -> (batch, objects ref, actor index, pid)
        self.writing: dict = {}  # writer add ref -> slide id (the batch still holds its slot)
        self.commits: dict = {}  # writer commit ref -> slide id
        # Writer processes, reused slide after slide: one per model actor plus one (so a slide's commit
        # does not hold up the next slide's batches), fewer for fewer slides. Started now, with the
        # readers, so that they import their stack while the model actors load: a writer still
        # starting when the first batches are done would hold their slots (see max_in_flight).
        n_writers = min(len(actors) + 1, len(todo))
        # Readers and writers share the half of the CPUs the model actors leave (executor.py).
        self.io_cpus = min(0.25, ray.cluster_resources().get("CPU", 1.0) / 2 / (len(actors) + n_writers))
        self.writers: list = [self._new_writer() for _ in range(n_writers)]
        # Reader processes (plans and patch pairs), one per model actor, used in turn; started now so
        # that they import their stack and plan the first slides while the model actors load.
        self.readers = [ray.remote(SlideReaderActor).options(num_cpus=self.io_cpus, max_restarts=-1,
                                                             max_concurrency=2).remote()
                        for _ in range(len(actors))]
        self.reads = 0
        # Until a reader has started ("ready" refs pending), this process plans the first slide and
        # reads batches itself (see start_here), from slides it keeps open until they end.
        self.readers_starting: dict = {r.ready.remote(): k for k, r in enumerate(self.readers)}
        self.open_here: dict = {}  # slide id -> Slide opened in this process (first reads, redos)
        # After a call on actor k failed: identify ref -> (k, when asked, the batches that failed on
        # it). An actor gets no work until its probe answers: Ray rejects calls made while an actor
        # restarts, and the answer's pid tells whether the process really died.
        self.probes: dict = {}
        self.load = [0] * len(actors)
        self.isolated = [False] * len(actors)  # running a batch that killed an actor before
        self.results: dict[str, SlideResult] = {}
        self.bars = _Bars(len(todo), cfg.progress)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> dict[str, SlideResult]:
        try:
            self.start_here()
            while self.todo or self.plans or self.states:
                self.plan_ahead()
                self._dispatch()
                waiting = [*self.in_flight, *self.probes, *self.writing, *self.commits, *self.plans, *self.starting,
                           *self.readers_starting]
                if not waiting:
                    raise RuntimeError(f"internal error: slides {sorted(self.states)} have work left but nothing "
                                       "is running")
                done, _ = ray.wait(waiting, num_returns=1)
                for ref in done:
                    if ref in self.starting:
                        self._started(ref)
                    elif ref in self.readers_starting:
                        self._reader_started()
                    elif ref in self.probes:
                        self._probe(ref)
                    elif ref in self.in_flight:
                        self._collect(ref)
                    elif ref in self.writing:
                        self._written(ref)
                    elif ref in self.commits:
                        self._committed(ref)
                    else:
                        self._open_slide(ref)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            self._drop_slides(list(self.states), "interrupted" if interrupted else "failed",
                              "run interrupted" if interrupted else f"run aborted: {type(exc).__name__}: {exc}")
            self.manifest.write(self.output_dir)
            raise
        finally:
            self._close_here()
            self.bars.close()
        for ref in list(self.probes):  # actors that restarted last: record who they are now
            try:
                if ray.wait([ref], timeout=30)[0]:
                    self.manifest.note_worker(asdict(ray.get(ref)))
            except Exception:  # noqa: BLE001 - it is gone: nothing to record
                pass
        self._totals()
        return self.results

    def _totals(self) -> None:
        """Stream figures for the manifest: ``streaming_s`` runs from the first model actor ready to
        the last batch done (the time the model could work); ``wall_s`` also holds the model load
        before it and the last commit after it."""
        t = self.manifest.totals
        t["wall_s"] = time.perf_counter() - self.t_start
        t["first_actor_ready_s"] = self.first_ready_s
        if self.first_ready_s is not None and self.last_batch_s is not None:
            t["streaming_s"] = self.last_batch_s - self.first_ready_s

    def _started(self, ref) -> None:
        """A model actor has loaded its model (or failed to: the run stops with its error)."""
        self.starting.pop(ref)
        try:
            who = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - Ray wraps the actor's own error
            raise actor_start_error(exc) from None
        if self.first_ready_s is None:
            self.first_ready_s = time.perf_counter() - self.t_start
        self.manifest.note_worker(asdict(who))
        self.manifest.write(self.output_dir)
        gpus = ",".join(who.gpu_ids) or "none"
        _say(f"model actor {who.actor_index}: {who.device} on host {who.host} (pid {who.pid}, Ray GPU ids {gpus})")

    def close(self) -> None:
        """End the reader and writer processes (after :meth:`run`, or instead of it)."""
        for w in self.writers + self.readers:
            ray.kill(w)
        self.writers, self.readers = [], []

    def busy_seconds(self) -> list[float] | None:
        """Seconds each model actor spent on batches (0 for one still loading its model); None when
        an actor does not answer (interrupted or dead)."""
        loading = set(self.starting.values())
        try:
            return [0.0 if k in loading else ray.get(a.busy_seconds.remote(), timeout=10)
                    for k, a in enumerate(self.actors)]
        except Exception:  # noqa: BLE001 - no busy figure
            return None

    def plan_ahead(self) -> None:
        """Start planning the next slides while the batch queue runs short (bounded look-ahead)."""
        while (self.todo and len(self.plans) < PLAN_AHEAD and len(self.queue) < self.max_in_flight
               and len(self.states) <= self.max_in_flight):
            info = self.todo.popleft()
            slide_prompts = None if self.prompts is None else self.prompts.get(info.slide_id, [])
            self.plans[self._reader().plan.remote(info, slide_prompts, self.detector, self.schedule)] = info
            self.manifest.slides[info.slide_id].status = "running"

    def start_here(self) -> None:
        """Plan the first slide in this process, while the reader processes start (seconds: they
        import tiatoolbox, which imports torch); until one has, batches are read here too
        (:meth:`_read`). This process has the slide reader loaded already (the input checks opened
        every slide), so the first model actor to load its model finds its first batches waiting.
        Not with a detector: detectors run in the readers."""
        if self.prompts is None or not self.todo:
            return
        info = self.todo.popleft()
        self.manifest.slides[info.slide_id].status = "running"
        try:
            plan = plan_slide(self._slide_here(info), self.prompts.get(info.slide_id, []), self.schedule)
        except Exception as exc:  # noqa: BLE001 - unreadable slide: it fails, as a reader's plan would
            self._fail(info.slide_id, exc, stage="planning")
            return
        self._opened(info, plan)

    def _slide_here(self, info: SlideInfo):
        """The slide, opened in this process (kept until the slide ends: :meth:`_close_here`)."""
        if info.slide_id not in self.open_here:
            self.open_here[info.slide_id] = info.open()
        return self.open_here[info.slide_id]

    def _reader_started(self) -> None:
        """A reader process has started: it reads from now on."""
        self.readers_starting.clear()  # its answer (or its error) is for the reads to tell

    def _close_here(self, slide_id: str | None = None) -> None:
        """Close the slides this process opened (``slide_id``: that one, if open)."""
        for sid in [slide_id] if slide_id is not None else list(self.open_here):
            slide = self.open_here.pop(sid, None)
            if slide is not None:
                slide.close()

    def _open_slide(self, plan_ref) -> None:
        """A plan is ready: start the slide's writer and queue its batches."""
        info = self.plans.pop(plan_ref)
        try:
            plan: SlidePlan = ray.get(plan_ref)
        except Exception as exc:  # noqa: BLE001 - unreadable slide, detector error: this slide fails
            self._fail(info.slide_id, exc, stage="planning")
            return
        self._opened(info, plan)

    def _opened(self, info: SlideInfo, plan: SlidePlan) -> None:
        entry = self.manifest.slides[info.slide_id]
        entry.prompts, entry.prompts_read, entry.windows = len(plan.prompts), plan.prompts_read, len(plan.windows)
        entry.encoder_passes = schedule_stats(plan.windows).encoder_passes
        entry.prompts_dropped_outside = plan.prompts_dropped_outside
        if plan.prompts_dropped_outside:
            _say(f"slide {info.slide_id}: {plan.prompts_dropped_outside} of {plan.prompts_read} prompt(s) lie "
                 "wholly outside the slide and were dropped")
        if not plan.prompts:
            _say(f"slide {info.slide_id}: no prompts to segment ({plan.prompts_read} read); its outputs will be empty")
        writer = self._writer_for_new_slide()
        self.writers[writer].open.remote(info, str(self.output_dir), self.label_mpp, self.output)
        batches = [b for level in by_level(plan.windows) for b in batched(level, self.cfg.windows_per_batch)]
        thumbnail = self._reader().thumbnail.remote(info) if self.output.qc else None  # for its qc.png
        self.states[info.slide_id] = _SlideState(info, plan, writer, len(batches), thumbnail, time.perf_counter())
        self.queue.extend(_Batch(info.slide_id, i, b) for i, b in enumerate(batches))
        self.bars.windows.total = (self.bars.windows.total or 0) + len(plan.windows)
        if not batches:
            self._commit(info.slide_id)

    def _reader(self):
        self.reads += 1
        return self.readers[self.reads % len(self.readers)]

    def _writer_for_new_slide(self) -> int:
        """The writer process with the fewest open slides."""
        load = [0] * len(self.writers)
        for st in self.states.values():
            load[st.writer] += 1
        return min(range(len(self.writers)), key=lambda w: (load[w], w))

    def _writer_died(self, w: int) -> None:
        """A writer process died: its open slides fail (their callers see it); new slides get a new one."""
        ray.kill(self.writers[w])
        self.writers[w] = self._new_writer()

    def _new_writer(self):
        """A writer process (not restarted by Ray: a dead one's slides fail, see _writer_died)."""
        return ray.remote(SlideWriterActor).options(num_cpus=self.io_cpus, max_restarts=0).remote()

    def _dispatch(self) -> None:
        """Send queued batches to model actors that have loaded their model. While none can take the
        next batch (all still loading, or restarting), the next batches' patch pairs are read ahead,
        within the same budget, so they are ready when an actor is; a batch is tied to an actor
        only when sent, so a slow or failed start holds up no batch."""
        while self.queue:
            batch = self.queue[0]
            if batch.slide_id not in self.states:  # its slide failed meanwhile
                self._pop()
                continue
            k = self._free_actor(batch)
            # Batches read ahead do not hold up one put first in the queue (a retry, a redo): with them
            # the count may pass the budget until they are sent, by at most the budget.
            if k is None or (batch.jobs is None and len(self.in_flight) + len(self.writing) >= self.max_in_flight):
                break
            self._pop()
            st = self.states[batch.slide_id]
            jobs = batch.jobs if batch.jobs is not None else self._read(batch)
            objects_ref, report_ref = self.actors[k].segment.options(num_returns=2).remote(
                jobs, batch.batch_id, completion_limits(st.info, self.schedule, self.output),
                previous_masks(st.pending, batch.windows))
            self.load[k] += 1
            self.isolated[k] = batch.suspect
            # The process it is sent to, as last seen (the manifest's actor list follows restarts).
            self.in_flight[report_ref] = (batch, objects_ref, k, self.manifest.actors[k]["pid"])
        for batch in self.queue:  # read ahead
            if self._slots() >= self.max_in_flight:
                break
            if batch.jobs is None and batch.slide_id in self.states:
                batch.jobs = self._read(batch)
                self.read_ahead += 1

    def _free_actor(self, batch: _Batch) -> int | None:
        """The least loaded actor that may take ``batch`` now, if any. Not one still loading its model
        or restarting (it gets work once it has said who it is, so its new process is recorded); a
        batch that killed an actor runs alone on an idle actor, so a second death is its own."""
        busy = {k for k, _, _ in self.probes.values()} | set(self.starting.values())
        free = [k for k in range(len(self.actors)) if not self.isolated[k] and k not in busy
                and (self.load[k] == 0 if batch.suspect else True)]
        return min(free, key=lambda a: (self.load[a], a)) if free else None

    def _read(self, batch: _Batch):
        """Start reading a batch's patch pairs (a ref the model actor's call takes as its argument):
        in a reader process, or here while none has started. A batch that cannot be read here goes
        to the readers, whose error its slide gets."""
        st = self.states[batch.slide_id]
        needed = st.plan.prompts_by_id(i for w in batch.windows for i in w.prompt_ids)
        if self.readers_starting:
            try:
                return ray.put(list(read_jobs(self._slide_here(st.info), needed, batch.windows)))
            except Exception:  # noqa: BLE001 - left to the readers
                pass
        return self._reader().read.remote(st.info, needed, batch.windows)

    def _pop(self) -> _Batch:
        batch = self.queue.popleft()
        self.read_ahead -= batch.jobs is not None
        return batch

    def _slots(self) -> int:
        """Batches being read, segmented or written (the in-flight budget's count)."""
        return len(self.in_flight) + len(self.writing) + self.read_ahead

    def _collect(self, ref) -> None:
        batch, objects_ref, k, pid = self.in_flight.pop(ref)
        self.load[k] -= 1
        self.isolated[k] = False
        try:
            report: BatchReport = ray.get(ref)
        except _DEATHS as exc:
            # Did the actor's process die, or was the call only refused? Its probe will tell.
            probe = next((r for r, (j, _, _) in self.probes.items() if j == k), None)
            if probe is None:
                self.probes[self.actors[k].identify.remote()] = (k, time.monotonic(), [(batch, pid, exc)])
            else:
                self.probes[probe][2].append((batch, pid, exc))
            return
        except Exception as exc:  # noqa: BLE001 - the read or the model raised: the slide fails
            if batch.slide_id in self.states:
                self._fail(batch.slide_id, exc, stage=f"batch {batch.batch_id}")
            return
        st = self.states.get(batch.slide_id)
        if st is None:
            return
        entry = self.manifest.slides[batch.slide_id]
        self.writing[self.writers[st.writer].add.remote(batch.slide_id, objects_ref)] = batch.slide_id
        entry.objects += report.objects
        entry.windows_computed += len(report.window_ids)
        worker = asdict(report.worker)
        self.manifest.note_worker(worker)
        entry.batches.append({"batch_id": report.batch_id, "windows": list(report.window_ids),
                              "objects": report.objects, "seconds": report.seconds,
                              "arrived_unix_s": round(report.arrived_unix_s, 3),
                              "started_unix_s": round(report.started_unix_s, 3),
                              "finished_unix_s": round(time.time(), 3), **worker})
        self.last_batch_s = time.perf_counter() - self.t_start
        if report.outcome is not None:
            self._redo(st, entry, report.outcome, batch.windows)
        st.batches_left -= 1
        self.bars.windows.update(len(report.window_ids))
        self.bars.objects.update(report.objects)
        if st.batches_left == 0:
            self._commit(batch.slide_id)

    def _written(self, ref) -> None:
        """The writer took a batch's objects: the batch's slot is free."""
        slide_id = self.writing.pop(ref)
        try:
            ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the writer failed: this slide fails
            if slide_id in self.states:
                self._fail(slide_id, exc, stage="writing")

    def _redo(self, st: _SlideState, entry, outcome, windows) -> None:
        """Count a settled batch; its prompts cut by their LR window become batches of coarser windows."""
        # The slide snaps the new windows' centres to its pyramid, as in plan_slide (kept open here
        # until the slide ends: redos come batch after batch).
        slide = self._slide_here(st.info) if outcome.redo else None
        new = add_outcome(entry, outcome, windows, st.plan, completion_limits(st.info, self.schedule, self.output),
                          slide and slide.patch_pair, self.cfg.windows_per_batch, st.pending)
        # First in the queue: the slide finishes (and frees its writer and memory) before later ones go on.
        self.queue.extendleft(reversed([_Batch(st.info.slide_id, b[0].window_id, b) for b in new]))
        st.batches_left += len(new)
        self.bars.windows.total += sum(len(b) for b in new)

    def _probe(self, ref) -> None:
        """An actor answered (or not) after calls on it failed: count deaths, requeue or fail batches."""
        k, since, failed = self.probes.pop(ref)
        try:
            who = ray.get(ref)
        except ActorDiedError as exc:  # it cannot be restarted (its __init__ fails now)
            raise ActorGoneError(f"model actor {k} died and cannot restart: {original_error(exc) or exc}") from None
        except _DEATHS:  # still restarting: ask again
            if time.monotonic() - since > self.cfg.restart_timeout_s:
                raise ActorGoneError(f"model actor {k} did not come back within {self.cfg.restart_timeout_s:.0f} s "
                                     "of dying") from None
            time.sleep(0.2)
            self.probes[self.actors[k].identify.remote()] = (k, since, failed)
            return
        self.manifest.note_worker(asdict(who))
        for batch, pid, exc in failed:
            if batch.slide_id not in self.states:
                continue
            batch.kills += who.pid != pid  # its process died while running it (else: the call was refused)
            batch.tries += 1
            windows = [w.window_id for w in batch.windows]
            if batch.kills >= self.cfg.max_batch_kills:
                self._fail(batch.slide_id, exc, stage=f"batch {batch.batch_id} (windows {windows}) killed its "
                           f"model worker {batch.kills} times; last")
            elif batch.tries >= 3 * self.cfg.max_batch_kills:
                self._fail(batch.slide_id, exc, stage=f"batch {batch.batch_id} (windows {windows}) failed "
                           f"{batch.tries} times; last")
            else:
                batch.jobs = None  # read again: a crashed read may be why it failed
                self.queue.appendleft(batch)

    # -- ends of a slide ------------------------------------------------------------------------

    def _commit(self, slide_id: str) -> None:
        """Every batch of the slide is segmented: ask its writer to publish (after the adds it has)."""
        st = self.states[slide_id]
        entry = self.manifest.slides[slide_id]
        res = SlideResult.of_plan(st.plan, slide_dir(self.output_dir, slide_id), entry,
                                  {"wall": time.perf_counter() - st.t0,
                                   "segment": sum(b["seconds"] for b in entry.batches)})
        summary = slide_summary(res, st.info, st.plan, self.run_context)
        # A writer runs its calls in order, so the commit follows every add; one that failed makes
        # the commit refuse (SlideWriterActor), so a slide is never published with a batch missing.
        self.commits[self.writers[st.writer].commit.remote(slide_id, summary, st.plan.prompts, st.thumbnail)] = \
            (slide_id, res)

    def _committed(self, ref) -> None:
        slide_id, res = self.commits.pop(ref)
        st = self.states.get(slide_id)
        if st is None:  # failed meanwhile
            return
        try:
            res.timings_s["stitch"] = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the writer failed: this slide fails
            self._fail(slide_id, exc, stage="writing")
            return
        self.states.pop(slide_id)
        self._close_here(slide_id)
        entry = self.manifest.slides[slide_id]
        entry.status, entry.seconds = "done", res.timings_s
        self.results[slide_id] = res
        self.manifest.write(self.output_dir)
        self.bars.slides.update(1)

    def _fail(self, slide_id: str, exc: BaseException, stage: str) -> None:
        err = original_error(exc) or exc
        message = f"{stage}: {type(err).__name__}: {err}"
        self._drop_slides([slide_id], "failed", message)
        self.manifest.write(self.output_dir)
        _say(f"slide {slide_id} failed ({message.splitlines()[0] if message else ''})")
        if self.cfg.fail_fast:
            raise SlideFailedError(f"slide {slide_id} failed: {message}") from err

    def _drop_slides(self, slide_ids: list[str], status: str, message: str) -> None:
        """Mark slides failed or interrupted, and remove their partial outputs. Their writers are
        asked to abort all at once and waited for together, at most 30 s in all (an interrupted
        cohort with many open slides ends as soon as one slide would)."""
        aborts = []  # (writer index, its answer)
        for sid in slide_ids:
            entry = self.manifest.slides[sid]
            entry.status, entry.error = status, message
            st = self.states.pop(sid, None)
            self._close_here(sid)
            if st is not None:
                aborts.append((st.writer, self.writers[st.writer].abort.remote(sid)))
        if aborts:
            ray.wait([ref for _, ref in aborts], num_returns=len(aborts), timeout=30)
        died = set()
        for w, ref in aborts:
            try:
                ray.get(ref, timeout=0)
            except _DEATHS:  # its writer process died: a new one serves the next slides
                died.add(w)
            except Exception:  # noqa: BLE001 - not answered in time: the partial folder is removed below
                pass
        for w in sorted(died):
            self._writer_died(w)
        for sid in slide_ids:
            remove_tree(self.output_dir, partial_dir(self.output_dir, sid).name)
        dropped = set(slide_ids)
        self.queue = deque(b for b in self.queue if b.slide_id not in dropped)
        self.read_ahead = sum(b.jobs is not None for b in self.queue)
        self.writing = {r: sid for r, sid in self.writing.items() if sid not in dropped}


def _say(message: str) -> None:
    tqdm.write(f"wsisam-engine: {message}", file=sys.stderr)


class _Bars:
    def __init__(self, n_slides: int, enabled: bool) -> None:
        self.slides = tqdm(total=n_slides, desc="slides", unit="slide", position=0, disable=not enabled)
        self.windows = tqdm(total=0, desc="windows", unit="win", position=1, disable=not enabled)
        self.objects = tqdm(desc="objects", unit="obj", position=2, disable=not enabled)

    def close(self) -> None:
        for b in (self.slides, self.windows, self.objects):
            b.close()
