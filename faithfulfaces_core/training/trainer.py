"""``train(config)``: joint training of the LoRA, the token projection and the aligner.

One optimizer step = ``gradient_accumulation_steps`` micro-batches per process; processes are
run by ``accelerate launch`` (DDP, FSDP; see docs/training.md). The loop checks every loss for
NaN/inf on every process and stops with the step's number, writes an atomic checkpoint every
``checkpoint_every`` steps, and resumes exactly: weights, optimizer, LR schedule, every RNG and
the data position (the micro-step count) come back, so a killed and resumed run ends with the
weights of an uninterrupted one.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import atomic_write
from ..errors import FaithfulFacesError
from . import checkpointing, feedback
from .config import CONFIG_NAME, TrainConfig, build_config, resume_differences
from .data import DataReport

DATA_REPORT_NAME = "data_report.json"


class TrainingDiverged(FaithfulFacesError):
    """A loss or the gradient norm became NaN or infinite; ``step`` is the step that failed."""

    def __init__(self, message: str, *, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class StopRequested(Exception):
    """``run.stop_after_step`` was reached (a test hook standing in for a kill)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"Stopped after step {step} as asked (run.stop_after_step); resume with --resume.")
        self.step = step


@dataclass(frozen=True)
class StepInfo:
    step: int
    loss: float
    flow: float
    infonce: float
    lr: float
    grad_norm: float
    seconds: float


@dataclass
class TrainResult:
    output_dir: Path
    outputs: Any  # export.TrainingOutputs (None on processes other than the main one)
    steps: int
    last: StepInfo | None
    report: DataReport
    resumed_from: Path | None


Callback = Callable[[StepInfo, Any], None]


def resolve_resume(output_dir: Path, resume: bool | str | Path | None) -> Path | None:
    """``True``: the newest checkpoint of ``output_dir`` (an error if none); a path: that checkpoint."""
    if resume is None or resume is False:
        return None
    if resume is True:
        path = checkpointing.latest_checkpoint(output_dir)
        if path is None:
            raise FaithfulFacesError(
                f"--resume: {output_dir / checkpointing.CHECKPOINTS_DIR} holds no checkpoint. Start without --resume, "
                "or point run.output_dir at the run to continue.")
        return path
    return Path(resume)


def _check_fresh_start(output_dir: Path) -> None:
    found = checkpointing.latest_checkpoint(output_dir)
    if found is not None:
        raise FaithfulFacesError(
            f"{output_dir} already holds checkpoints (newest: {found.name}). Continue that run with --resume, or pick "
            "a new run.output_dir.")


def _mixed_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


@dataclass
class _Run:
    """What every stage of one ``train`` call shares: the config, the output folder, the processes."""

    config: TrainConfig
    out: Path
    accelerator: Any
    fsdp: bool
    logger: logging.Logger
    resume_path: Path | None = None
    manifest_sha: str = ""

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class _Conditioning:
    """The frozen inputs of the flow loss: live encoders, or the latent cache that replaced them."""

    conditioner: Any  # encoding.Conditioner, None when the cache holds everything
    cache: Any  # cache.LatentCache or None
    blank: torch.Tensor
    masks: torch.Tensor
    base: dict[str, Any]
    base_dtype: torch.dtype


@dataclass
class _Model:
    """The wrapped ``JointModel`` with its optimizer and LR schedule."""

    joint: Any  # as accelerate.prepare returned it (DDP / FSDP wrapper)
    model: Any  # the unwrapped JointModel
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    trainable_names: list[str]


def train(
    config: TrainConfig,
    *,
    resume: bool | str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> TrainResult:
    """Run (or resume) the training ``config`` describes; see the module docstring.

    ``callbacks(info, model)`` run after every optimizer step (and its checkpoint) on every process
    (``model`` is the unwrapped ``JointModel``). Raises ``TrainingDiverged`` on a non-finite loss and
    ``StopRequested`` at ``run.stop_after_step``.
    """
    config.require_paths()
    summary_writer_cls = feedback.require_tensorboard() if config.run.tensorboard else None
    run = _start(config)
    try:
        run.resume_path = _check_resume(config, run.out, resume)
        _write_run_files(run)
        index = _index_data(run)
        cond = _conditioning(run, index, progress=progress)
        built = _build_model(run, cond)
        step, micro, batch_iter, metrics = _data_and_resume(run, built, index, cond)
        writer = summary_writer_cls(str(run.out / feedback.TENSORBOARD_DIR), purge_step=step + 1) \
            if summary_writer_cls is not None and run.main else None
        last = _loop(run, built, cond, batch_iter, metrics, writer, step, micro, callbacks, progress=progress)
        outputs = _export(run, built, cond, metrics, last.step if last else step)
        if writer is not None:
            writer.close()
        run.accelerator.wait_for_everyone()
        return TrainResult(run.out, outputs, last.step if last else step, last, index.report, run.resume_path)
    except (FaithfulFacesError, StopRequested) as exc:
        run.logger.error("%s", exc)
        raise
    finally:
        feedback.close_logging()


def _start(config: TrainConfig) -> _Run:
    """The accelerator (one per process) and the log; FSDP1 is refused (it flattens mixed dtypes)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from ..devices import resolve_device

    device = resolve_device(config.run.device)
    accelerator = Accelerator(cpu=device.type == "cpu",
                              mixed_precision=_mixed_precision(config.run.mixed_precision, device))
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1) != 2:
        raise FaithfulFacesError(
            "FSDP version 1 flattens each block's parameters into one tensor of one dtype, but the LoRA trains in "
            "float32 beside the frozen bf16 base. Set fsdp_version: 2 in the accelerate config (docs/training.md).")
    out = Path(config.run.output_dir)
    return _Run(config, out, accelerator, fsdp, feedback.setup_logging(out, main=accelerator.is_main_process))


def _check_resume(config: TrainConfig, out: Path, resume: bool | str | Path | None) -> Path | None:
    """The checkpoint to resume from (its run's options must match), or a check for a fresh start."""
    resume_path = resolve_resume(out, resume)
    if resume_path is None:
        _check_fresh_start(out)
        return None
    saved = build_config(checkpointing.read_state(resume_path)["config"], where=str(resume_path))
    changed = resume_differences(saved, config)
    if changed:
        raise FaithfulFacesError(
            f"Cannot resume {resume_path}: these options differ from the checkpoint's run: "
            + ", ".join(f"{k} ({saved.flat()[k]!r} → {config.flat()[k]!r})" for k in changed)
            + ". Use the original values (see its config.json), or start a new run.output_dir.")
    return resume_path


def _write_run_files(run: _Run) -> None:
    accelerator = run.accelerator
    if run.main:
        checkpointing.remove_leftovers(run.out)
        text = run.config.to_json()
        atomic_write(run.out / CONFIG_NAME, lambda p: Path(p).write_text(text, encoding="utf-8"))
    run.logger.info("FaithfulFaces training → %s (%d process%s, %s, mixed precision %s)", run.out,
                    accelerator.num_processes, "" if accelerator.num_processes == 1 else "es", run.device,
                    accelerator.mixed_precision)


def _index_data(run: _Run):
    """The dataset index (its skip report logged and written); sets ``run.manifest_sha``."""
    from .data import index_dataset

    index = index_dataset(run.config.data)
    run.manifest_sha = hashlib.sha256(Path(index.report.manifest).read_bytes()).hexdigest()
    run.logger.info("data: %s", index.report.summary())
    for line in index.report.details():
        run.logger.warning("data: %s", line)
    if run.main:
        report_text = json.dumps(index.report.to_dict(), indent=1)
        atomic_write(run.out / DATA_REPORT_NAME, lambda p: Path(p).write_text(report_text, encoding="utf-8"))
    return index


def _conditioning(run: _Run, index, *, progress: bool) -> _Conditioning:
    """Frozen encoders, and with ``data.cache_latents`` the cache they fill (then they are freed)."""
    from ..devices import resolve_dtype
    from ..wan.generate import check_video_size
    from . import models
    from .cache import LatentCache, build_cache, cache_fingerprint
    from .encoding import Conditioner

    config, data_cfg, device, accelerator = run.config, run.config.data, run.device, run.accelerator
    tconfig = models.transformer_config(config.model)
    spatial, temporal = models.vae_scale_factors(config.model)
    check_video_size(data_cfg.width, data_cfg.height, data_cfg.num_frames,
                     spatial=spatial * tconfig["patch_size"][1], temporal=temporal)
    base = models.base_identity(config.model, tconfig)
    base_dtype = resolve_dtype(config.model.dtype, device)
    pipe = models.load_encoders(config.model, tconfig, device=device, dtype=base_dtype)
    conditioner = Conditioner(pipe, device=device, height=data_cfg.height, width=data_cfg.width,
                              num_frames=data_cfg.num_frames, max_sequence_length=data_cfg.max_sequence_length)
    if not data_cfg.cache_latents:
        blank, masks = conditioner.constant_parts()
        return _Conditioning(conditioner, None, blank.to(device), masks.to(device), base, base_dtype)
    encoders = models.encoder_identity(config.model, pipe, base_dtype)
    cache = LatentCache(data_cfg.cache_dir or run.out / "cache", cache_fingerprint(encoders, data_cfg),
                        max_sequence_length=data_cfg.max_sequence_length, dtype=data_cfg.cache_dtype)
    stats = build_cache(cache, index, conditioner, data_cfg, rank=accelerator.process_index,
                        world=accelerator.num_processes, progress=progress and run.main)
    run.logger.info("latent cache %s: %s", cache.dir, stats)
    accelerator.wait_for_everyone()
    blank, masks = cache.read_context()
    del conditioner, pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return _Conditioning(None, cache, blank.to(device), masks.to(device), base, base_dtype)


def _build_model(run: _Run, cond: _Conditioning) -> _Model:
    """Seeded LoRA transformer + aligner → ``JointModel``, AdamW, LR schedule, wrapped by accelerate."""
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    from . import models
    from .objective import JointModel

    config, device, optim = run.config, run.device, run.config.optim
    set_seed(config.run.seed)
    transformer = models.load_transformer(config.model, dtype=cond.base_dtype).to(device)
    grad_ckpt = config.run.gradient_checkpointing == "on" or (
        config.run.gradient_checkpointing == "auto" and device.type == "cuda")
    prepared = models.prepare_transformer(transformer, config.lora, gradient_checkpointing=grad_ckpt,
                                          attention_backend=config.model.attention_backend)
    aligner = models.build_aligner(config.aligner, cond.base["width"]).to(device)
    joint = JointModel(prepared.transformer, aligner, prepared.injection,
                       infonce_weight=config.objective.infonce_weight,
                       num_train_timesteps=config.objective.num_train_timesteps,
                       reference_frame_loss=config.objective.reference_frame_loss)
    lora_params, projection_params, aligner_params = joint.trainable_parameters()
    optimizer = torch.optim.AdamW(
        [{"params": lora_params + projection_params, "lr": optim.learning_rate},
         {"params": aligner_params, "lr": optim.aligner_learning_rate or optim.learning_rate}],
        betas=(optim.beta1, optim.beta2), eps=optim.eps, weight_decay=optim.weight_decay,
    )
    scheduler = get_scheduler(optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps,
                              num_training_steps=config.run.max_steps)
    params = lora_params + projection_params + aligner_params
    base = cond.base
    run.logger.info("base %s (width %d, %d layers, %s); trainable %.2fM parameters (LoRA rank %d, aligner, "
                    "projection); gradient checkpointing %s", base["source"], base["width"], base["num_layers"],
                    cond.base_dtype, sum(p.numel() for p in params) / 1e6, config.lora.rank,
                    "on" if grad_ckpt else "off")
    trainable_names = sorted(joint.trainable_state())
    if run.resume_path is not None:  # weights before wrapping (FSDP shards them)
        checkpointing.load_model_state(run.resume_path, joint.trainable_state(),
                                       world_size=run.accelerator.num_processes)
    joint, optimizer = run.accelerator.prepare(joint, optimizer)
    return _Model(joint, run.accelerator.unwrap_model(joint), optimizer, scheduler, params, trainable_names)


def _data_and_resume(run: _Run, built: _Model, index, cond: _Conditioning):
    """The optimizer/schedule state and data position of a resumed run, the batch iterator, the metrics.

    Returns ``(step, micro_step, batch_iter, metrics)``. The RNG states come back last: nothing
    before them may shift the resumed run's random streams.
    """
    from .data import BatchPlan, MicroSteps, StepBatches

    config, data_cfg, accelerator = run.config, run.config.data, run.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    plan = BatchPlan(index, seed=config.run.seed, batch_size=data_cfg.batch_size,
                     aligner_batch_size=data_cfg.aligner_batch_size, views_per_identity=data_cfg.views_per_identity)
    batches = StepBatches(index, plan, data_cfg, face_size=built.model.aligner.config.image_size, rank=rank,
                          world=world, cache=cond.cache)
    metrics = feedback.Metrics(run.out)
    step, micro = 0, 0
    if run.resume_path is not None:
        resumed = checkpointing.load_training_state(run.resume_path, optimizer=built.optimizer,
                                                    scheduler=built.scheduler, rank=rank, world_size=world,
                                                    sharded=run.fsdp)
        step, micro = resumed.step, resumed.micro_step
        run.logger.info("resumed from %s at step %d", run.resume_path, step)
        if resumed.extra.get("manifest_sha256") not in (None, run.manifest_sha):
            run.logger.warning("the dataset's manifest changed since %s: the data order from here on differs "
                               "from the original run's", run.resume_path.name)
    accum = config.optim.gradient_accumulation_steps
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=data_cfg.num_workers,
        sampler=MicroSteps(micro, config.run.max_steps * accum, repeat_first=config.run.overfit_one_batch),
        generator=torch.Generator().manual_seed(config.run.seed), pin_memory=run.device.type == "cuda",
    )
    batch_iter = iter(loader)
    if run.resume_path is not None:
        checkpointing.load_rng(run.resume_path, rank=rank)
    if run.main:
        metrics.truncate(step)
    return step, micro, batch_iter, metrics


def _loop(run: _Run, built: _Model, cond: _Conditioning, batch_iter, metrics, writer, step: int, micro: int,
          callbacks: Sequence[Callback], *, progress: bool) -> StepInfo | None:
    """Optimizer steps up to ``run.max_steps``: record, checkpoint, callbacks; the last ``StepInfo``."""
    from tqdm.auto import tqdm

    cfg = run.config.run
    last: StepInfo | None = None
    bar = tqdm(total=cfg.max_steps, initial=step, desc="training", unit="step",
               disable=not (progress and run.main), dynamic_ncols=True)
    while step < cfg.max_steps:
        last = _optimisation_step(run, built, cond, batch_iter, step)
        step, micro = last.step, micro + run.config.optim.gradient_accumulation_steps
        _record(run, last, metrics, writer, bar)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            _save(run.accelerator, built.joint, built.optimizer, built.scheduler, run.out, step, micro, run.config,
                  built.trainable_names, keep=cfg.keep_checkpoints, sharded=run.fsdp,
                  extra={"manifest_sha256": run.manifest_sha})
            run.logger.info("checkpoint %s", checkpointing.checkpoint_dir(run.out, step))
            if run.main and step < cfg.max_steps:
                feedback.plot_losses(metrics.read(), run.out / feedback.CURVE_NAME)
        for callback in callbacks:
            callback(last, built.model)
        if cfg.stop_after_step is not None and cfg.max_steps > step >= cfg.stop_after_step:
            bar.close()
            raise StopRequested(step)
    bar.close()
    return last


def _optimisation_step(run: _Run, built: _Model, cond: _Conditioning, batch_iter, step: int) -> StepInfo:
    """``gradient_accumulation_steps`` micro-batches, gradient clipping, one optimizer step → step + 1."""
    
    accelerator, optim, model = run.accelerator, run.config.optim, built.model
    accum = optim.gradient_accumulation_steps
    started = time.perf_counter()
    sums = torch.zeros(3, device=run.device)
    for m in range(accum):
        inputs = _flow_inputs(run, cond, next(batch_iter))
        with (nullcontext() if m == accum - 1 else accelerator.no_sync(built.joint)):
            with accelerator.autocast():
                losses = built.joint(inputs)
            if not _all_finite(accelerator, losses.flow, losses.infonce):
                model.clear_tokens()
                raise _diverged(run.out, step + 1, f"the loss (flow {float(losses.flow):.4g}, InfoNCE "
                                                   f"{float(losses.infonce):.4g})")
            accelerator.backward(losses.total / accum)
        model.clear_tokens()
        sums += torch.stack([losses.total.detach(), losses.flow, losses.infonce]).float() / accum
    max_norm = optim.max_grad_norm if optim.max_grad_norm > 0 else float("inf")
    grad_norm = accelerator.clip_grad_norm_(built.params, max_norm)
    if accelerator.mixed_precision != "fp16" and not _all_finite(accelerator, torch.as_tensor(grad_norm)):
        raise _diverged(run.out, step + 1, "the gradient norm")
    built.optimizer.step()
    built.scheduler.step()
    built.optimizer.zero_grad(set_to_none=True)
    model.aligner.clamp_logit_scale_()
    total, flow, infonce = (float(v) for v in accelerator.reduce(sums, reduction="mean"))
    return StepInfo(step + 1, total, flow, infonce, float(built.scheduler.get_last_lr()[0]), float(grad_norm),
                    time.perf_counter() - started)


def _flow_inputs(run: _Run, cond: _Conditioning, batch: dict[str, Any]) -> dict[str, Any]:
    """A loader batch → ``JointModel`` inputs: clean latents ``x0``, noise, sigmas, VACE context, faces."""
    from .encoding import clean_latents, vace_context
    from .objective import flow_inputs

    device = run.device
    if cond.cache is None:
        prompt_embeds = cond.conditioner.prompt_embeds(batch["prompts"])
        latents = cond.conditioner.video_latents(batch["clips"])
        parts = cond.conditioner.reference_parts(batch["reference_images"])
    else:
        prompt_embeds, latents, parts = (batch[k].to(device) for k in ("prompt_embeds", "latents",
                                                                         "reference_parts"))
    x0 = clean_latents(parts, latents)
    sigmas, noise = flow_inputs(x0.shape, batch["noise_seed"], run.config.objective.flow_shift)
    inputs = {k: batch[k].to(device, torch.float32) for k in
              ("reference_faces", "reference_euler", "view_faces", "view_euler")}
    inputs.update(x0=x0, noise=noise.to(device), sigmas=sigmas.to(device),
                  prompt_embeds=prompt_embeds.to(cond.base_dtype),
                  context=vace_context(parts, cond.blank, cond.masks).to(cond.base_dtype),
                  reference_frames=parts.shape[2])
    return inputs


def _all_finite(accelerator, *values: torch.Tensor) -> bool:
    """True when every value is finite on every process (all take the same branch)."""
    bad = torch.tensor([0.0 if bool(torch.isfinite(v).all()) else 1.0 for v in values], device=accelerator.device)
    return float(accelerator.reduce(bad, reduction="sum").sum()) == 0.0


def _diverged(out: Path, step: int, what: str) -> TrainingDiverged:
    last = checkpointing.latest_checkpoint(out)
    where = f"the last good checkpoint is {last} (nothing was written after it)" if last else \
        "no checkpoint was written yet"
    return TrainingDiverged(
        f"Training stopped at step {step}: {what} is not finite; {where}. Lower optim.learning_rate, keep "
        "optim.max_grad_norm on, prefer mixed_precision bf16 over fp16, or check the data; then --resume.",
        step=step, checkpoint=last)


def _record(run: _Run, info: StepInfo, metrics, writer, bar) -> None:
    """One step's numbers → metrics.jsonl, TensorBoard, the progress bar and (every log_every) the log."""
    if run.main:
        metrics.append({"step": info.step, "loss": info.loss, "flow": info.flow, "infonce": info.infonce,
                        "lr": info.lr, "grad_norm": info.grad_norm, "seconds": info.seconds})
        if writer is not None:
            for key in ("loss", "flow", "infonce", "lr", "grad_norm", "seconds"):
                writer.add_scalar(f"train/{key}", getattr(info, key), info.step)
    bar.set_postfix(loss=f"{info.loss:.4f}", flow=f"{info.flow:.4f}", nce=f"{info.infonce:.4f}", lr=f"{info.lr:.1e}")
    bar.update()
    max_steps = run.config.run.max_steps
    if info.step % run.config.run.log_every == 0 or info.step == max_steps:
        run.logger.info("step %d/%d loss %.5f flow %.5f infonce %.5f lr %.3g grad %.3g %.2f s/step", info.step,
                        max_steps, info.loss, info.flow, info.infonce, info.lr, info.grad_norm, info.seconds)


def _export(run: _Run, built: _Model, cond: _Conditioning, metrics, step: int):
    """The aligner and LoRA files the nodes load, and the final loss curve (main process; None elsewhere)."""
    from .export import export_outputs, output_metadata

    outputs = None
    run.accelerator.wait_for_everyone()
    if run.main:
        meta = output_metadata(run.config.to_json(), cond.base, step)
        outputs = export_outputs(run.out, transformer=built.model.transformer, aligner=built.model.aligner,
                                 metadata=meta)
        feedback.plot_losses(metrics.read(), run.out / feedback.CURVE_NAME)
        run.logger.info("wrote %s, %s, %s and %s", outputs.aligner.name, outputs.lora.name,
                        outputs.lora_comfy.name, feedback.CURVE_NAME)
    return outputs


def _save(accelerator, joint, optimizer, scheduler, out: Path, step: int, micro: int, config: TrainConfig,
          names: list[str], *, keep: int, sharded: bool, extra: dict[str, Any]) -> Path:
    """Gather what a checkpoint needs and write it (all processes take part)."""
    if sharded:  # FSDP: full weights gathered on process 0; each process keeps its optimizer shard
        full = accelerator.get_state_dict(joint)
        model_state = {k: full[k] for k in names} if accelerator.is_main_process else {}
    else:
        model_state = accelerator.unwrap_model(joint).trainable_state() if accelerator.is_main_process else {}
    return checkpointing.save_training_checkpoint(
        out, step, micro_step=micro, model_state=model_state, optimizer_state=optimizer.state_dict(),
        scheduler_state=scheduler.state_dict(), config=json.loads(config.to_json()),
        rank=accelerator.process_index, world_size=accelerator.num_processes,
        barrier=accelerator.wait_for_everyone, keep=keep, sharded_optimizer=sharded, extra=extra,
    )
