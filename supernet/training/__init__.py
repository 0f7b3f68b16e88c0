"""Training elastic supernets (progressive shrinking), resumable and data parallel.

Modules: ``trainer`` (the :class:`~supernet.training.trainer.Trainer` and its run directory),
``step`` (one step's gradient over the sampled subnets), ``config`` (validated training
configs), ``sampler`` (which subnets a step trains), ``distributed`` (process group and
DistributedDataParallel), ``data`` (datasets), ``components`` (loss, dropout, init, learning
rate schedule), ``state`` (the layout of a run's ``checkpoint.pt``).

Nothing is imported here: ``supernet.checkpoint`` reads training checkpoints through
``supernet.training.state``, and importing the trainer from this file would make that import
circular.
"""
