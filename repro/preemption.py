"""When a training run writes a mid-epoch checkpoint: on SIGTERM, SIGUSR1 (a cluster's pre-emption notice) or SIGUSR2
(submitit's, 90 s before a job's time limit; the run then stops with status PREEMPTED_STATUS), and every
`resources.checkpoint_minutes` (so a SIGKILL loses at most that much). Decided after an optimizer update, and by
all ranks together."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import torch

# submitit's notice, 90 s before a job's time limit or at a pre-emption (its default SUBMITIT_PREEMPT_SIGNAL), upon
# which its handler requeues the job (repro.cluster.ComputeRun)
CLUSTER_NOTICE = signal.SIGUSR2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, CLUSTER_NOTICE)
PREEMPTED_STATUS = 75  # EX_TEMPFAIL: rerun the same command to resume


def leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """The training loader's `worker_init_fn`. A cluster signals every process of a job (Slurm's time limit, scancel,
    pre-emption), the loader workers too, and a worker that dies of it fails the trainer's step before its
    checkpoint: torch's worker handler dies of a SIGTERM from anyone but its parent. So a worker ignores SIGUSR1
    and SIGUSR2, and a thread takes SIGTERM, ending the worker only when its parent sent it (the loader's shutdown,
    as torch does); the trainer stops, and the workers end with its loader."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # here and in every thread started after
    parent = os.getppid()

    def end_on_the_parents_sigterm():
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=end_on_the_parents_sigterm, name="stop-signals", daemon=True).start()


class Preempted(Exception):
    """A stop signal arrived: the run wrote its mid-epoch checkpoint and stopped, unfinished. `signal_name`: the
    signal that stopped it (the cluster's notice where any rank had it; else this process's, None where another
    rank's stopped it)."""

    def __init__(self, message: str, signal_name: str | None = None):
        super().__init__(message)
        self.signal_name = signal_name

class CheckpointPacer:
    """Catches the stop signals while training (the former handlers come back on close) and tells, after each
    update, whether to write a checkpoint now and whether to stop."""

    def __init__(self, minutes: float, env):  # env: a repro.train.distributed.DistEnv
        self.interval = 60.0 * float(minutes)
        self.env = env
        self.signal_name: str | None = None  # the signal this process received
        self.notice = False  # whether any rank received the cluster's notice
        self.acted = False  # whether a stop was acted on (a checkpoint written and the run stopped)
        self.last = time.monotonic()
        self.former = {}
        if threading.current_thread() is threading.main_thread():  # Python runs handlers in the main thread only
            self.former = {number: signal.signal(number, self._on_signal) for number in STOP_SIGNALS}

    def _on_signal(self, number, frame) -> None:
        self.signal_name = signal.Signals(number).name
        print(f"received {self.signal_name}: stopping after this step with a checkpoint", file=sys.stderr,
              flush=True)

    def poll(self) -> tuple[bool, bool]:
        """(checkpoint now, stop now), the same on every rank: any rank's signal stops all, rank 0's clock times
        the periodic checkpoints."""
        due = self.interval > 0 and self.env.is_main and time.monotonic() - self.last >= self.interval
        flags = torch.tensor([float(self.signal_name is not None), float(due),
                              float(self.signal_name == CLUSTER_NOTICE.name)], device=self.env.device)
        if self.env.distributed:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, due, self.notice = (bool(flag.item()) for flag in flags)
        self.acted = self.acted or stop
        return stop or due, stop

    @property
    def stopped_by(self) -> str | None:
        """What stopped the run: the cluster's notice where any rank had it (every rank then hands it on to
        submitit, whose rank-0 handler requeues the job), else this process's signal."""
        return CLUSTER_NOTICE.name if self.notice else self.signal_name

    def saved(self) -> None:
        self.last = time.monotonic()

    def close(self) -> None:
        """The former handlers back; a signal that came after the last step's check (during the final evaluation)
        is handed on to them, as if it had come now: it was not acted on."""
        for number, handler in self.former.items():
            signal.signal(number, handler)
        self.former = {}
        if self.signal_name is not None and not self.acted:
            self.acted = True
            signal.raise_signal(signal.Signals[self.signal_name])
