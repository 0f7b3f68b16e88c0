"""Progressive-shrinking trainer for elastic supernets (OFA), resumable and data parallel.

Stages run in order: ``teacher`` (largest network only), ``kernel`` (elastic kernel; the
transformation matrices learn), ``depth`` and ``expand`` (one smaller choice opened per stage,
middle channels re-sorted by importance at the start of every expand stage). Optionally
``full`` samples every dimension from the start (the no-progressive-shrinking baseline).

Every random choice comes from an explicit generator held by the trainer: the subnet sampler
(shared seed, identical on every rank), augmentation (per rank) and dropout (per rank); their
states, with model, optimizer, schedule and position, go into an atomically written
checkpoint, so ``resume`` continues exactly as an uninterrupted run would. The checkpoint's
layout is defined in :mod:`supernet.training.state`; one step's gradient in
:mod:`supernet.training.step`.

Run directory: ``checkpoint.pt`` (training state), ``supernet.pt`` (weights, updated at every
stage end), ``teacher.pt``, ``config.yaml`` (resolved config), ``log.jsonl`` (training
progress), ``metrics.jsonl`` (subnet grid accuracies at every stage end).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..arch import ArchConfig
from ..bn import autocast_for, evaluate_subnet
from ..checkpoint import atomic_torch_save, load_state_dict_file, load_supernet, save_supernet
from ..cost import arch_cost
from ..errors import OfaDeployError
from ..model import Supernet, extract_subnet
from .components import ExplicitDropout, WarmupCosine, digest_tensors, init_weights, model_digest
from .config import ConfigError, StageConfig, TrainConfig
from .data import Dataset
from .distributed import DistContext, DistError
from .sampler import SubnetSampler, arch_digest, phase_choices
from .state import build_train_state, check_resumable
from .step import LossSettings, backward_subnets

__all__ = ["Trainer", "TrainError"]


class TrainError(OfaDeployError, RuntimeError):
    """A run that cannot start or resume; the message says why."""


class Trainer:
    """Trains ``space``'s supernet on ``dataset`` through the stages of ``phases``."""

    def __init__(self, space, dataset: Dataset, config: TrainConfig, out_dir, *,
                 phases: Sequence[str], data_spec: str = "", device: str = "cpu",
                 dist: DistContext | None = None, progress: bool = True):
        self.space = config.space
        if space is not None and getattr(space, "name", space) != self.space.name:
            raise ConfigError(f"config is for space {self.space.name}, not {space}")
        if dataset.num_classes != self.space.num_classes:
            raise TrainError(f"dataset {dataset.name} has {dataset.num_classes} classes but "
                             f"space {self.space.name} has {self.space.num_classes}")
        self.data, self.cfg, self.data_spec = dataset, config, str(data_spec)
        self.phases = tuple(phases)
        self.stages: List[StageConfig] = config.stages(self.phases)
        self.out = Path(out_dir)
        self.device = torch.device(device)
        self.dist = dist or DistContext()
        self.progress = progress
        d = config.data
        self.seed = d["seed"]
        ws = self.dist.world_size
        if d["batch_size"] % ws:
            raise ConfigError(f"config field 'batch_size': {d['batch_size']} does not split over "
                              f"{ws} processes")
        self.local_batch = d["batch_size"] // ws
        self.amp = bool(d["amp"]) and self.device.type == "cuda"
        self.autocast = autocast_for(self.device, self.amp)
        self.channels_last = bool(d["channels_last"])
        # Training pool: the training split minus the held-out part, optionally a fixed subset
        # (the same one for every seed, so benchmark arms see the same images).
        pool = np.arange(len(dataset.train))
        sub = d["data"]["train_subset"]
        if sub is not None and sub < len(pool):
            pool = np.sort(np.random.default_rng(1).permutation(len(pool))[:sub])
        self.pool = pool
        self.steps_per_epoch = len(pool) // d["batch_size"]
        if self.steps_per_epoch < 1:
            raise ConfigError(f"config field 'batch_size': {d['batch_size']} is larger than the "
                              f"{len(pool)} training images")
        self.paths = {k: self.out / v for k, v in dict(
            checkpoint="checkpoint.pt", supernet="supernet.pt", teacher="teacher.pt",
            config="config.yaml", log="log.jsonl", metrics="metrics.jsonl").items()}
        self.teacher: nn.Module | None = None
        self.optimizer = None
        self.scheduler: WarmupCosine | None = None
        self.scaler = None
        self._perm_cache: Dict[tuple, np.ndarray] = {}
        self._arch_chain = hashlib.sha256()

    # -- building ------------------------------------------------------------------------
    def _build(self) -> None:
        d = self.cfg.data
        net = Supernet(self.space)
        init_weights(net, torch.Generator().manual_seed(self.seed))
        if d["init"]:
            src = load_supernet(d["init"], self.space)
            net.load_state_dict(src.state_dict())
        rank = self.dist.rank
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.dropout_gen = torch.Generator(device=gen_device)
        self.dropout_gen.manual_seed(int(np.random.SeedSequence([self.seed, 0xD20, rank])
                                         .generate_state(1)[0]))
        if isinstance(net.classifier.dropout, nn.Dropout):
            net.classifier.dropout = ExplicitDropout(net.classifier.dropout.p, self.dropout_gen)
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.train()
        self.net = net
        # forward/backward of training go through the DDP wrapper; evaluation and checkpoints
        # use the bare network
        self.train_model = self.dist.wrap_for_training(net)
        self.sampler = SubnetSampler(self.space, self.seed, strategy=d["sampler"],
                                     resolutions=self.cfg.resolutions,
                                     resolution_probs=self.cfg.resolution_probs)
        self.aug_rng = np.random.default_rng([self.seed, 0xA06, rank])
        self.pos = {"stage": 0, "step": 0, "global_step": 0, "setup_done": False}
        self.log_lines = self.metrics_lines = 0
        self.elapsed = 0.0
        self._t0 = time.time()
        # Running sums since the last log line (checkpointed, so resumed logs match).
        self._win = {"loss": 0.0, "acc": 0.0, "n": 0, "images": 0, "t": time.time()}

    def stage_steps(self, st: StageConfig) -> int:
        """Number of optimizer steps of stage ``st`` (at least one unless it has no epochs)."""
        if st.epochs <= 0:
            return 0
        return max(1, int(round(st.epochs * self.steps_per_epoch)))

    def _make_optimizer(self, st: StageConfig) -> None:
        o = self.cfg.data["optimizer"]
        decay, no_decay = [], []
        for p in self.net.parameters():
            (no_decay if o["no_decay_bn_bias"] and p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": o["weight_decay"]}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        self.optimizer = torch.optim.SGD(groups, lr=st.lr, momentum=o["momentum"],
                                         nesterov=o["nesterov"] and o["momentum"] > 0)
        steps = self.stage_steps(st)
        warm = min(steps, int(round(st.warmup_epochs * self.steps_per_epoch)))
        self.scheduler = WarmupCosine(self.optimizer, st.lr, steps, warm, st.warmup_lr)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def _teacher_source(self):
        d = self.cfg.data["loss"]
        if d["teacher"]:
            return d["teacher"]
        if not self.paths["teacher"].exists():
            # No teacher stage in this run: distil from the network as it enters its first
            # distillation stage (snapshotted, so a resume distils from the same weights).
            self.dist.average_buffers(self.net)
            if self.dist.is_main:
                save_supernet(self.net, self.paths["teacher"])
            self.dist.barrier()
        return self.paths["teacher"]

    def _load_teacher(self) -> None:
        src = load_supernet(self._teacher_source(), self.space)
        t = extract_subnet(src, ArchConfig.max(self.space)).to(self.device)
        if self.channels_last:
            t = t.to(memory_format=torch.channels_last)
        t.eval().requires_grad_(False)
        self.teacher = t

    def _enter_stage(self, st: StageConfig, saved: dict | None) -> None:
        needs_teacher = (self.cfg.data["loss"]["kd_weight"] > 0 and st.phase != "teacher")
        if needs_teacher and self.teacher is None:
            self._load_teacher()
        if not needs_teacher:
            self.teacher = None
        if not self.pos["setup_done"]:
            if st.phase == "expand":
                self.net.sort_channels(st.stage - 1)
            self.pos["setup_done"] = True
        self._make_optimizer(st)
        if saved is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            if self.scaler is not None and saved.get("scaler"):
                self.scaler.load_state_dict(saved["scaler"])

    # -- data ------------------------------------------------------------------------------
    def _batch_indices(self, stage_idx: int, step: int) -> np.ndarray:
        spe, b = self.steps_per_epoch, self.cfg.data["batch_size"]
        epoch, pos = divmod(step, spe)
        key = (stage_idx, epoch)
        if key not in self._perm_cache:
            self._perm_cache = {key: np.random.default_rng(
                [self.seed, 0xDA7A, stage_idx, epoch]).permutation(self.pool)}
        glob = self._perm_cache[key][pos * b:(pos + 1) * b]
        r = self.dist.rank
        return glob[r * self.local_batch:(r + 1) * self.local_batch]

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- one step ----------------------------------------------------------------------------
    def _train_step(self, st: StageConfig, stage_idx: int) -> dict:
        d = self.cfg.data
        choices = phase_choices(self.space, st.phase, st.stage)
        r, archs = self.sampler.sample_step(choices, st.subnets_per_step)
        # Ranks sample from identically seeded samplers; the digest chain is compared at every
        # checkpoint (get_state) rather than with a collective every step.
        self._arch_chain.update(arch_digest(archs).to_bytes(8, "little"))
        idx = self._batch_indices(stage_idx, self.pos["step"])
        x, y = self.data.train.batch(idx, r, train=True, rng=self.aug_rng,
                                     crop_padding=d["data"]["crop_padding"], flip=d["data"]["flip"])
        x, y = self._to_device(x), y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        t_logits = None
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                t_logits = self.teacher(x).float()
        first = backward_subnets(
            self.train_model, archs, x, y, LossSettings.from_config(d["loss"], d["sampler"]),
            teacher_logits=t_logits, autocast=self.autocast,
            scale=self.scaler.scale if self.scaler is not None else (lambda loss: loss))
        params = list(self.net.parameters())
        clip = d["optimizer"]["grad_clip"]
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.optimizer.step()
        self.scheduler.step()
        return {"loss": first.loss, "acc": first.acc, "r": r, "images": int(y.numel())}

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate_grid(self, st: StageConfig) -> List[dict]:
        """BN-calibrated accuracy of the min/max corners of the stage's elastic dimensions."""
        e = self.cfg.data["eval"]
        source = self.data.split(e["split"])
        net = self.net  # the extracted subnet gets its own plain BN and dropout
        choices = phase_choices(self.space, st.phase, st.stage)
        out = []
        for arch in choices.corners(self.space, self.cfg.eval_resolutions):
            res = evaluate_subnet(net, arch, source, self.data.holdout,
                                  calib_images=e["calib_images"], images=e["images"],
                                  batch_size=e["batch_size"], device=self.device, amp=self.amp,
                                  channels_last=self.channels_last)
            out.append({"stage": st.name, "phase": st.phase, "global_step": self.pos["global_step"],
                        "split": e["split"], "arch": arch.to_string(self.space),
                        "ks": max(arch.ks), "e": max(arch.e), "d": max(arch.d),
                        "min_ks": min(arch.ks), "min_e": min(arch.e), "min_d": min(arch.d),
                        "r": arch.r, **arch_cost(self.space, arch),
                        "accuracy": round(res["accuracy"], 6), "samples": res["samples"],
                        "loss": round(res["loss"], 6)})
        return out

    # -- files -----------------------------------------------------------------------------------
    def _append(self, key: str, rows: List[dict]) -> None:
        if not self.dist.is_main or not rows:
            return
        with open(self.paths[key], "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
            fh.flush()
        if key == "log":
            self.log_lines += len(rows)
        else:
            self.metrics_lines += len(rows)

    def _truncate(self, key: str, lines: int) -> None:
        """Drop lines written after the checkpoint we resume from (they will be rewritten)."""
        p = self.paths[key]
        if not self.dist.is_main or not p.exists():
            return
        kept = p.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, p)

    def get_state(self) -> dict:
        """The full training state (what a checkpoint holds). Collective under torchrun: every
        rank calls it (BN buffers are averaged, per-rank generator states gathered)."""
        self.dist.average_buffers(self.net)
        ranks = self.dist.all_gather_object({"aug": self.aug_rng.bit_generator.state,
                                             "dropout": self.dropout_gen.get_state(),
                                             "arch_chain": self._arch_chain.hexdigest()})
        # DDP averages whatever each rank computed: ranks that trained different subnets would
        # corrupt the weights silently, so a run that diverged stops before it is saved.
        if len({r["arch_chain"] for r in ranks}) > 1:
            raise DistError(f"rank {self.dist.rank}: ranks disagree on the sampled subnets")
        return build_train_state(
            space=self.space.name, config=self.cfg.get_state(), phases=self.phases,
            data=self.data_spec, world_size=self.dist.world_size, position=self.pos,
            model={k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            optimizer=self.optimizer.state_dict() if self.optimizer is not None else None,
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            sampler=self.sampler.get_state(),
            rng={"aug": [r["aug"] for r in ranks], "dropout": [r["dropout"] for r in ranks]},
            logs={"log": self.log_lines, "metrics": self.metrics_lines,
                  "window": {k: self._win[k] for k in ("loss", "acc", "n")}},
            elapsed_s=self.elapsed + (time.time() - self._t0))

    def _save_checkpoint(self) -> None:
        """Collective: every rank calls it; rank 0 writes."""
        state = self.get_state()
        if self.dist.is_main:
            atomic_torch_save(state, self.paths["checkpoint"])
        self.dist.barrier()

    def _save_supernet(self, final: bool) -> None:
        if not self.dist.is_main:
            return
        meta = {"trained_by": "ofa-deploy train", "data": self.data_spec,
                "phases": list(self.phases),
                "stages_done": [s.name for s in self.stages[:self.pos["stage"]]],
                "global_step": self.pos["global_step"], "complete": final,
                "config": self.cfg.get_state()}
        save_supernet(self.net, self.paths["supernet"], metadata=meta)

    def _resume_state(self) -> dict:
        ck = load_state_dict_file(self.paths["checkpoint"])
        problem = check_resumable(ck, source=str(self.paths["checkpoint"]), run=str(self.out),
                                  config=self.cfg.get_state(), phases=self.phases,
                                  world_size=self.dist.world_size, data=self.data_spec)
        if problem is not None:
            raise TrainError(problem)
        return ck

    def _restore(self, ck: dict) -> dict | None:
        self.net.load_state_dict(ck["model"])
        self.sampler.set_state(ck["sampler"])
        rank = self.dist.rank
        self.aug_rng.bit_generator.state = ck["rng"]["aug"][rank]
        self.dropout_gen.set_state(ck["rng"]["dropout"][rank])
        self.pos = dict(ck["position"])
        self.log_lines, self.metrics_lines = ck["logs"]["log"], ck["logs"]["metrics"]
        self._win.update(ck["logs"].get("window", {}))
        self._truncate("log", self.log_lines)
        self._truncate("metrics", self.metrics_lines)
        self.elapsed = float(ck.get("elapsed_s", 0.0))
        if self.pos["setup_done"]:
            return {k: ck[k] for k in ("optimizer", "scheduler", "scaler")}
        return None

    def _write_config(self) -> None:
        if not self.dist.is_main:
            return
        import yaml

        doc = {"space": self.space.name, "data": self.data_spec, "phases": list(self.phases),
               "world_size": self.dist.world_size, "device": str(self.device),
               "config": self.cfg.data}
        tmp = self.paths["config"].with_name(".config.yaml.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        os.replace(tmp, self.paths["config"])

    # -- main loop ---------------------------------------------------------------------------------
    def run(self, *, resume: bool = False, max_steps: int | None = None) -> dict:
        """Train every remaining stage. ``max_steps`` stops (after a checkpoint) once that many
        steps in total have run: a controlled interruption for tests and time-boxed runs."""
        self.out.mkdir(parents=True, exist_ok=True)
        ck_exists = self.paths["checkpoint"].exists()
        if resume and not ck_exists:
            raise TrainError(f"nothing to resume: {self.paths['checkpoint']} does not exist")
        if not resume and ck_exists:
            raise TrainError(f"{self.out} already holds a run (checkpoint.pt); pass --resume to "
                             "continue it or choose another --out")
        self._build()
        saved = None
        if resume:
            ck = self._resume_state()
            saved = self._restore(ck)
            del ck
        else:
            for key in ("log", "metrics"):
                if self.dist.is_main and self.paths[key].exists():
                    self.paths[key].unlink()
            if self.dist.is_main and self.paths["teacher"].exists() and not self.cfg.data["loss"]["teacher"]:
                self.paths["teacher"].unlink()  # a stale teacher from an older run
            self.dist.barrier()
        self._write_config()
        self._t0 = time.time()
        checkpoint_every = self.cfg.data["checkpoint_every"]
        interrupted = False
        while self.pos["stage"] < len(self.stages) and not interrupted:
            stage_idx = self.pos["stage"]
            st = self.stages[stage_idx]
            steps = self.stage_steps(st)
            if steps > 0:
                self._enter_stage(st, saved)
                saved = None
                interrupted = self._run_stage(st, stage_idx, steps, checkpoint_every, max_steps)
                if interrupted:
                    break
                metrics = []
                if self.dist.is_main:
                    metrics = self.evaluate_grid(st)
                self.dist.barrier()
                self._append("metrics", metrics)
                if st.phase == "teacher":
                    self.dist.average_buffers(self.net)
                    if self.dist.is_main:
                        save_supernet(self.net, self.paths["teacher"])
                    self.dist.barrier()
                    self.teacher = None
            self.pos.update(stage=stage_idx + 1, step=0, setup_done=False)
            self.optimizer = self.scheduler = self.scaler = None
            self._save_checkpoint()
            self._save_supernet(final=self.pos["stage"] >= len(self.stages))
            if max_steps is not None and self.pos["global_step"] >= max_steps:
                interrupted = self.pos["stage"] < len(self.stages)
        self.elapsed += time.time() - self._t0
        self._t0 = time.time()
        if self.dist.enabled:
            self._write_rank_report()
        return {"complete": not interrupted, "global_step": self.pos["global_step"],
                "elapsed_s": round(self.elapsed, 1), "out": str(self.out)}

    def _run_stage(self, st: StageConfig, stage_idx: int, steps: int, checkpoint_every: int,
                   max_steps: int | None) -> bool:
        log_every = self.cfg.data["log_every"]
        bar = None
        if self.progress and self.dist.is_main:
            from ..progress import progress_bar

            bar = progress_bar(steps, initial=self.pos["step"], desc=f"{st.name:<9}",
                               unit="step", file=sys.stderr, mininterval=0.5, leave=True)
        win = self._win
        win.update(images=0, t=time.time())
        try:
            while self.pos["step"] < steps:
                m = self._train_step(st, stage_idx)
                self.pos["step"] += 1
                self.pos["global_step"] += 1
                win["loss"] += m["loss"]
                win["acc"] += m["acc"]
                win["n"] += 1
                win["images"] += m["images"] * self.dist.world_size
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['acc']:.3f}", r=m["r"],
                                    refresh=False)
                if self.pos["step"] % log_every == 0 or self.pos["step"] == steps:
                    dt = max(1e-9, time.time() - win["t"])
                    self._append("log", [{
                        "stage": st.name, "step": self.pos["step"], "steps": steps,
                        "global_step": self.pos["global_step"],
                        "epoch": round(self.pos["step"] / self.steps_per_epoch, 4),
                        "loss": round(win["loss"] / win["n"], 5),
                        "acc": round(win["acc"] / win["n"], 5),
                        "lr": round(self.optimizer.param_groups[0]["lr"], 8),
                        "images_per_s": round(win["images"] / dt, 2),
                        "elapsed_s": round(self.elapsed + time.time() - self._t0, 1)}])
                    win.update(loss=0.0, acc=0.0, n=0, images=0, t=time.time())
                stop = max_steps is not None and self.pos["global_step"] >= max_steps
                due = self.pos["global_step"] % checkpoint_every == 0
                if self.pos["step"] < steps and (due or stop):
                    self._save_checkpoint()
                if stop and self.pos["step"] < steps:
                    return True
        finally:
            if bar is not None:
                bar.close()
        return False

    def _write_rank_report(self) -> None:
        d = self.out / "dist"
        d.mkdir(parents=True, exist_ok=True)
        # Parameters are compared before buffers are averaged: ranks see different images, so
        # equal parameters show that gradients were averaged.
        params = digest_tensors(self.net.parameters())
        self.dist.average_buffers(self.net)
        rep = {"rank": self.dist.rank, "world_size": self.dist.world_size,
               "global_step": self.pos["global_step"], "arch_chain": self._arch_chain.hexdigest(),
               "param_digest": params, "model_digest": model_digest(self.net)}
        (d / f"rank{self.dist.rank}.json").write_text(json.dumps(rep), encoding="utf-8")

