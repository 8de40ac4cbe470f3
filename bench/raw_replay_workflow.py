"""The raw-Temporal baseline of the replay benchmark: N objects, one no-op activity per object
(or per batch of object keys), with a bounded number of activities in flight.

Like Sluice's ExecutionWorkflow it keeps history small by continuing as new: after
`activities_per_run` activities (Sluice's SLUICE_ACTIVITIES_PER_RUN default is passed in) or when
Temporal suggests it, it stops starting activities, lets the ones in flight finish, and continues as
new with its position. So 10,000 per-object activities never put ~60,000 events (3 per activity
plus the workflow tasks between them) into one history, over Temporal's 51,200-event limit.

Keys are derived from the index (`{prefix}{i:06d}.txt`, the names the Sluice fan-out wrote), so the
input stays a few bytes whatever N is. Activity options mirror what a Sluice route gets by default:
start_to_close 10m, heartbeat 10s, 3 attempts from a 1s backoff. No I/O and no imports beyond
temporalio and the standard library, so the workflow sandbox loads it as is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

RAW_REPLAY_WORKFLOW = "BenchRawReplay"
RAW_OBJECT = "bench.raw_object"  # one object key per activity
RAW_BATCH = "bench.raw_batch"  # a list of object keys per activity
START_TO_CLOSE = timedelta(minutes=10)
HEARTBEAT = timedelta(seconds=10)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=3,
)


@dataclass
class RawReplayJob:
    prefix: str  # keys are f"{prefix}{i:06d}.txt" for i in range(total)
    total: int
    concurrency: int  # activities in flight at once
    batch: int = 1  # keys per RAW_BATCH activity
    per_object: bool = True  # True: one RAW_OBJECT activity per key (batch is ignored)
    activities_per_run: int = 2000
    # carried across continue-as-new
    next_index: int = 0
    processed: int = 0
    activities: int = 0
    runs: int = 1


@dataclass
class RawReplayResult:
    processed: int
    activities: int
    runs: int


@workflow.defn(name=RAW_REPLAY_WORKFLOW)
class RawReplayWorkflow:
    @workflow.run
    async def run(self, job: RawReplayJob) -> RawReplayResult:
        self._job = job
        self._next = job.next_index
        self._processed = job.processed
        self._activities = job.activities
        self._this_run = 0
        self._draining = False
        lanes = min(job.concurrency, max(job.total - job.next_index, 0))
        await asyncio.gather(*(self._lane() for _ in range(lanes)))
        if self._next < job.total:
            workflow.continue_as_new(
                replace(
                    job,
                    next_index=self._next,
                    processed=self._processed,
                    activities=self._activities,
                    runs=job.runs + 1,
                )
            )
        return RawReplayResult(processed=self._processed, activities=self._activities, runs=job.runs)

    async def _lane(self) -> None:
        job = self._job
        while self._next < job.total:
            if not self._draining and (
                self._this_run >= job.activities_per_run or workflow.info().is_continue_as_new_suggested()
            ):
                self._draining = True
            if self._draining:
                return
            start = self._next
            count = 1 if job.per_object else min(job.batch, job.total - start)
            self._next += count
            self._this_run += 1
            self._activities += 1
            keys = [f"{job.prefix}{i:06d}.txt" for i in range(start, start + count)]
            if job.per_object:
                done = await workflow.execute_activity(
                    RAW_OBJECT,
                    keys[0],
                    result_type=int,
                    start_to_close_timeout=START_TO_CLOSE,
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=RETRY,
                )
            else:
                done = await workflow.execute_activity(
                    RAW_BATCH,
                    keys,
                    result_type=int,
                    start_to_close_timeout=START_TO_CLOSE,
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=RETRY,
                )
            self._processed += done
