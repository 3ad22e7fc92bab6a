"""The streaming driver loop: slides -> plans -> window batches -> model actors -> slide writers.

At most ``max_in_flight`` batches are read or segmented at once (default 2 per actor), so memory
stays flat for a cohort of any size. A batch's objects reach the slide's writer only from the
call that completed, so a killed actor loses and duplicates nothing. Failures stay with their
slide (see ``executor.py``).
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
from ..pipeline import SlidePlan, SlideResult, batched, by_level, summary_dict
from ..scheduler import schedule_stats
from ..slides import SlideInfo
from .actors import BatchReport, SlideWriterActor, plan_task, read_task
from .errors import original_error

_plan_remote = ray.remote(num_cpus=0.25, max_retries=0)(plan_task)
_read_remote = ray.remote(num_cpus=0.25, max_retries=1)(read_task)
#: Errors that mean "the model actor's process died", not "the batch raised".
_DEATHS = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)


class SlideFailedError(RuntimeError):
    """A slide failed and ``fail_fast`` was set."""


class ActorGoneError(RuntimeError):
    """A model actor died and did not come back: the run cannot go on."""


@dataclass
class _Batch:
    slide_id: str
    batch_id: int
    windows: list
    kills: int = 0  # times the model actor died while running it
    tries: int = 0  # times a call with it failed (died, refused, or its read's worker crashed)

    @property
    def suspect(self) -> bool:
        return self.kills > 0


@dataclass
class _SlideState:
    info: SlideInfo
    plan: SlidePlan
    writer: "ray.actor.ActorHandle"
    batches_left: int
    add_refs: list = field(default_factory=list)
    t0: float = 0.0


class CohortStream:
    def __init__(self, todo, prompts, detector, actors, output_dir, schedule, output, cfg, manifest, settings):
        self.todo, self.prompts, self.detector, self.actors = deque(todo), prompts, detector, actors
        self.output_dir, self.schedule, self.output, self.cfg = output_dir, schedule, output, cfg
        self.manifest, self.settings = manifest, settings
        self.label_mpp = output.label_mpp or schedule.hr_mpp
        self.max_in_flight = cfg.max_in_flight or 2 * len(actors)
        self.plan_refs = deque(_plan_remote.remote(s, None if prompts is None else prompts.get(s.slide_id, []),
                                                   detector, schedule) for s in todo)
        self.states: dict[str, _SlideState] = {}
        self.queue: deque[_Batch] = deque()
        self.in_flight: dict = {}  # report ref -> (batch, objects ref, actor index)
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
        t_start = time.perf_counter()
        try:
            while self.todo or self.queue or self.in_flight or self.states:
                # Keep one slide ahead planned so the actors never wait for a plan.
                while self.todo and (len(self.queue) < self.max_in_flight or not self.states):
                    self._open_next_slide()
                self._dispatch()
                if self.in_flight or self.probes:
                    done, _ = ray.wait(list(self.in_flight) + list(self.probes), num_returns=1)
                    for ref in done:
                        self._probe(ref) if ref in self.probes else self._collect(ref)
                elif self.states and not self.queue:
                    for sid in [s for s, st in self.states.items() if st.batches_left == 0]:
                        self._finish_slide(sid)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            for sid in list(self.states):
                self._drop_slide(sid, "interrupted" if interrupted else "failed",
                                 "run interrupted" if interrupted else f"run aborted: {type(exc).__name__}: {exc}")
            self.manifest.write(self.output_dir)
            raise
        finally:
            self.bars.close()
        for ref in list(self.probes):  # actors that restarted last: record who they are now
            try:
                if ray.wait([ref], timeout=30)[0]:
                    self.manifest.note_worker(asdict(ray.get(ref)))
            except Exception:  # noqa: BLE001 - it is gone: nothing to record
                pass
        self.manifest.totals["wall_s"] = time.perf_counter() - t_start
        return self.results

    def _open_next_slide(self) -> None:
        info = self.todo.popleft()
        plan_ref = self.plan_refs.popleft()
        entry = self.manifest.slides[info.slide_id]
        entry.status = "running"
        try:
            plan: SlidePlan = ray.get(plan_ref)
        except Exception as exc:  # noqa: BLE001 - unreadable slide, detector error: this slide fails
            self._fail(info.slide_id, exc, stage="planning")
            return
        entry.prompts, entry.prompts_read, entry.windows = len(plan.prompts), plan.prompts_read, len(plan.windows)
        entry.encoder_passes = schedule_stats(plan.windows).encoder_passes
        entry.prompts_dropped_outside = plan.prompts_dropped_outside
        if plan.prompts_dropped_outside:
            _say(f"slide {info.slide_id}: {plan.prompts_dropped_outside} of {plan.prompts_read} prompt(s) lie "
                 "wholly outside the slide and were dropped")
        if not plan.prompts:
            _say(f"slide {info.slide_id}: no prompts to segment ({plan.prompts_read} read); its outputs will be empty")
        writer = ray.remote(SlideWriterActor).options(num_cpus=0.25, max_restarts=0).remote(
            info, str(self.output_dir), self.label_mpp, self.output)
        batches = [b for level in by_level(plan.windows) for b in batched(level, self.cfg.windows_per_batch)]
        self.states[info.slide_id] = _SlideState(info, plan, writer, len(batches), t0=time.perf_counter())
        self.queue.extend(_Batch(info.slide_id, i, b) for i, b in enumerate(batches))
        self.bars.windows.total = (self.bars.windows.total or 0) + len(plan.windows)
        if not batches:
            self._finish_slide(info.slide_id)

    def _dispatch(self) -> None:
        while self.queue and len(self.in_flight) < self.max_in_flight:
            batch = self.queue[0]
            if batch.slide_id not in self.states:  # its slide failed meanwhile
                self.queue.popleft()
                continue
            # A batch that killed an actor runs alone on an idle actor, so a second death is its own;
            # a restarted actor gets work once it has said who it is (its new process is recorded).
            probing = {k for k, _, _ in self.probes.values()}
            free = [k for k in range(len(self.actors)) if not self.isolated[k] and k not in probing
                    and (self.load[k] == 0 if batch.suspect else True)]
            if not free:
                return
            self.queue.popleft()
            k = min(free, key=lambda a: (self.load[a], a))
            st = self.states[batch.slide_id]
            ids = {i for w in batch.windows for i in w.prompt_ids}
            needed = {p.prompt_id: p for p in st.plan.prompts if p.prompt_id in ids}
            jobs = _read_remote.remote(st.info, needed, batch.windows)
            objects_ref, report_ref = self.actors[k].segment.options(num_returns=2).remote(jobs, batch.batch_id)
            self.load[k] += 1
            self.isolated[k] = batch.suspect
            # The process it is sent to, as last seen (the manifest's actor list follows restarts).
            self.in_flight[report_ref] = (batch, objects_ref, k, self.manifest.actors[k]["pid"])

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
        st.add_refs.append(st.writer.add.remote(objects_ref))
        entry.objects += report.objects
        entry.windows_computed += len(report.window_ids)
        worker = asdict(report.worker)
        self.manifest.note_worker(worker)
        entry.batches.append({"batch_id": report.batch_id, "windows": list(report.window_ids),
                              "objects": report.objects, "seconds": report.seconds,
                              "finished_unix_s": round(time.time(), 3), **worker})
        st.batches_left -= 1
        self.bars.windows.update(len(report.window_ids))
        self.bars.objects.update(report.objects)
        if st.batches_left == 0:
            self._finish_slide(batch.slide_id)

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
                self.queue.appendleft(batch)

    # -- ends of a slide ------------------------------------------------------------------------

    def _finish_slide(self, slide_id: str) -> None:
        st = self.states[slide_id]
        entry = self.manifest.slides[slide_id]
        res = SlideResult(slide_id, str(slide_dir(self.output_dir, slide_id)), prompts=entry.prompts,
                          objects=entry.objects, empty_masks=entry.prompts - entry.objects,
                          windows=entry.windows, encoder_passes=entry.encoder_passes,
                          prompts_dropped_outside=entry.prompts_dropped_outside)
        res.timings_s = {"wall": time.perf_counter() - st.t0, "segment": sum(b["seconds"] for b in entry.batches)}
        cfg = self.manifest.config
        summary = summary_dict(res, st.info, cfg.get("schedule", {}), cfg.get("output", {}), cfg.get("segmenter", ""))
        summary.update(run_id=self.manifest.run_id, settings=self.settings[slide_id],
                       prompts_read=entry.prompts_read)
        try:
            ray.get(st.add_refs)
            res.timings_s["stitch"] = ray.get(st.writer.commit.remote(summary, st.plan.prompts))
        except Exception as exc:  # noqa: BLE001 - the writer failed: this slide fails
            self._fail(slide_id, exc, stage="writing")
            return
        self.states.pop(slide_id)
        ray.kill(st.writer)
        entry.status, entry.seconds = "done", res.timings_s
        self.results[slide_id] = res
        self.manifest.write(self.output_dir)
        self.bars.slides.update(1)

    def _fail(self, slide_id: str, exc: BaseException, stage: str) -> None:
        err = original_error(exc) or exc
        message = f"{stage}: {type(err).__name__}: {err}"
        self._drop_slide(slide_id, "failed", message)
        self.manifest.write(self.output_dir)
        _say(f"slide {slide_id} failed ({message.splitlines()[0] if message else ''})")
        if self.cfg.fail_fast:
            raise SlideFailedError(f"slide {slide_id} failed: {message}") from err

    def _drop_slide(self, slide_id: str, status: str, message: str) -> None:
        """Mark a slide failed or interrupted, and remove its partial output."""
        entry = self.manifest.slides[slide_id]
        entry.status, entry.error = status, message
        st = self.states.pop(slide_id, None)
        if st is not None:
            try:
                ray.get(st.writer.abort.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead writer: the partial folder is removed below
                pass
            ray.kill(st.writer)
        remove_tree(self.output_dir, partial_dir(self.output_dir, slide_id).name)
        self.queue = deque(b for b in self.queue if b.slide_id != slide_id)


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
