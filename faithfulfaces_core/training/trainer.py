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
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from ..devices import resolve_device, resolve_dtype
    from ..wan.generate import check_video_size
    from . import models
    from .cache import LatentCache, build_cache, cache_fingerprint
    from .data import BatchPlan, MicroSteps, StepBatches, index_dataset
    from .encoding import Conditioner, clean_latents, vace_context
    from .export import export_outputs, output_metadata
    from .objective import JointModel, flow_inputs

    config.require_paths()
    run, data_cfg = config.run, config.data
    out = Path(run.output_dir)
    summary_writer_cls = feedback.require_tensorboard() if run.tensorboard else None
    device = resolve_device(run.device)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=_mixed_precision(run.mixed_precision, device))
    device = accelerator.device
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1) != 2:
        raise FaithfulFacesError(
            "FSDP version 1 flattens each block's parameters into one tensor of one dtype, but the LoRA trains in "
            "float32 beside the frozen bf16 base. Set fsdp_version: 2 in the accelerate config (docs/training.md).")
    logger = feedback.setup_logging(out, main=main)
    try:
        resume_path = resolve_resume(out, resume)
        if resume_path is not None:
            saved = build_config(checkpointing.read_state(resume_path)["config"], where=str(resume_path))
            changed = resume_differences(saved, config)
            if changed:
                raise FaithfulFacesError(
                    f"Cannot resume {resume_path}: these options differ from the checkpoint's run: "
                    + ", ".join(f"{k} ({saved.flat()[k]!r} → {config.flat()[k]!r})" for k in changed)
                    + ". Use the original values (see its config.json), or start a new run.output_dir.")
        else:
            _check_fresh_start(out)
        if main:
            checkpointing.remove_leftovers(out)
            text = config.to_json()
            atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(text, encoding="utf-8"))
        logger.info("FaithfulFaces training → %s (%d process%s, %s, mixed precision %s)", out, world,
                    "" if world == 1 else "es", device, accelerator.mixed_precision)

        # --- data ---------------------------------------------------------------------------------
        index = index_dataset(data_cfg)
        manifest_sha = hashlib.sha256(Path(index.report.manifest).read_bytes()).hexdigest()
        logger.info("data: %s", index.report.summary())
        for line in index.report.details():
            logger.warning("data: %s", line)
        if main:
            report_text = json.dumps(index.report.to_dict(), indent=1)
            atomic_write(out / DATA_REPORT_NAME, lambda p: Path(p).write_text(report_text, encoding="utf-8"))

        # --- models -------------------------------------------------------------------------------
        tconfig = models.transformer_config(config.model)
        spatial, temporal = models.vae_scale_factors(config.model)
        check_video_size(data_cfg.width, data_cfg.height, data_cfg.num_frames,
                         spatial=spatial * tconfig["patch_size"][1], temporal=temporal)
        base = models.base_identity(config.model, tconfig)
        base_dtype = resolve_dtype(config.model.dtype, device)
        pipe = models.load_encoders(config.model, tconfig, device=device, dtype=base_dtype)
        conditioner = Conditioner(pipe, device=device, height=data_cfg.height, width=data_cfg.width,
                                  num_frames=data_cfg.num_frames, max_sequence_length=data_cfg.max_sequence_length)
        cache = None
        if data_cfg.cache_latents:
            encoders = models.encoder_identity(config.model, pipe, base_dtype)
            cache = LatentCache(data_cfg.cache_dir or out / "cache", cache_fingerprint(encoders, data_cfg),
                                max_sequence_length=data_cfg.max_sequence_length, dtype=data_cfg.cache_dtype)
            stats = build_cache(cache, index, conditioner, data_cfg, rank=rank, world=world,
                                progress=progress and main)
            logger.info("latent cache %s: %s", cache.dir, stats)
            accelerator.wait_for_everyone()
            blank, masks = cache.read_context()
            del conditioner, pipe
            conditioner = pipe = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            blank, masks = conditioner.constant_parts()
        blank, masks = blank.to(device), masks.to(device)

        set_seed(run.seed)
        transformer = models.load_transformer(config.model, dtype=base_dtype).to(device)
        grad_ckpt = run.gradient_checkpointing == "on" or (run.gradient_checkpointing == "auto" and device.type == "cuda")
        prepared = models.prepare_transformer(transformer, config.lora, gradient_checkpointing=grad_ckpt,
                                              attention_backend=config.model.attention_backend)
        aligner = models.build_aligner(config.aligner, base["width"]).to(device)
        joint = JointModel(prepared.transformer, aligner, prepared.injection,
                           infonce_weight=config.objective.infonce_weight,
                           num_train_timesteps=config.objective.num_train_timesteps,
                           reference_frame_loss=config.objective.reference_frame_loss)
        lora_params, projection_params, aligner_params = joint.trainable_parameters()
        optim = config.optim
        optimizer = torch.optim.AdamW(
            [{"params": lora_params + projection_params, "lr": optim.learning_rate},
             {"params": aligner_params, "lr": optim.aligner_learning_rate or optim.learning_rate}],
            betas=(optim.beta1, optim.beta2), eps=optim.eps, weight_decay=optim.weight_decay,
        )
        scheduler = get_scheduler(optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps,
                                  num_training_steps=run.max_steps)
        trainable_names = sorted(joint.trainable_state())
        n_trainable = sum(p.numel() for p in lora_params + projection_params + aligner_params)
        logger.info("base %s (width %d, %d layers, %s); trainable %.2fM parameters (LoRA rank %d, aligner, projection); "
                    "gradient checkpointing %s", base["source"], base["width"], base["num_layers"], base_dtype,
                    n_trainable / 1e6, config.lora.rank, "on" if grad_ckpt else "off")

        start_step, start_micro = 0, 0
        if resume_path is not None:  # weights before wrapping (FSDP shards them)
            checkpointing.load_model_state(resume_path, joint.trainable_state(), world_size=world)
        joint, optimizer = accelerator.prepare(joint, optimizer)
        model = accelerator.unwrap_model(joint)

        accum = optim.gradient_accumulation_steps
        plan = BatchPlan(index, seed=run.seed, batch_size=data_cfg.batch_size,
                         aligner_batch_size=data_cfg.aligner_batch_size)
        batches = StepBatches(index, plan, data_cfg, face_size=model.aligner.config.image_size, rank=rank,
                              world=world, cache=cache)
        metrics = feedback.Metrics(out)
        if resume_path is not None:
            resumed = checkpointing.load_training_state(
                resume_path, optimizer=optimizer, scheduler=scheduler, rank=rank, world_size=world, sharded=fsdp)
            start_step, start_micro = resumed.step, resumed.micro_step
            logger.info("resumed from %s at step %d", resume_path, start_step)
            if resumed.extra.get("manifest_sha256") not in (None, manifest_sha):
                logger.warning("the dataset's manifest changed since %s: the data order from here on differs from "
                               "the original run's", resume_path.name)
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, num_workers=data_cfg.num_workers,
            sampler=MicroSteps(start_micro, run.max_steps * accum, repeat_first=run.overfit_one_batch),
            generator=torch.Generator().manual_seed(run.seed), pin_memory=device.type == "cuda",
        )
        batch_iter = iter(loader)
        if resume_path is not None:  # last: nothing above may shift the resumed run's RNG streams
            checkpointing.load_rng(resume_path, rank=rank)
        if main:
            metrics.truncate(start_step)
        writer = summary_writer_cls(str(out / feedback.TENSORBOARD_DIR), purge_step=start_step + 1) \
            if summary_writer_cls is not None and main else None

        def to_inputs(batch: dict[str, Any]) -> dict[str, Any]:
            if cache is None:
                prompt_embeds = conditioner.prompt_embeds(batch["prompts"])
                latents = conditioner.video_latents(batch["clips"])
                parts = conditioner.reference_parts(batch["reference_images"])
            else:
                prompt_embeds, latents, parts = (batch[k].to(device) for k in ("prompt_embeds", "latents",
                                                                                 "reference_parts"))
            x0 = clean_latents(parts, latents)
            sigmas, noise = flow_inputs(x0.shape, batch["noise_seed"], config.objective.flow_shift)
            inputs = {k: batch[k].to(device, torch.float32) for k in
                      ("reference_faces", "reference_euler", "faces_a", "euler_a", "faces_b", "euler_b")}
            inputs.update(x0=x0, noise=noise.to(device), sigmas=sigmas.to(device),
                          prompt_embeds=prompt_embeds.to(base_dtype),
                          context=vace_context(parts, blank, masks).to(base_dtype),
                          reference_frames=parts.shape[2])
            return inputs

        def all_finite(*values: torch.Tensor) -> bool:
            bad = torch.tensor([0.0 if bool(torch.isfinite(v).all()) else 1.0 for v in values], device=device)
            return float(accelerator.reduce(bad, reduction="sum").sum()) == 0.0

        def diverged(step: int, what: str) -> TrainingDiverged:
            last = checkpointing.latest_checkpoint(out)
            where = f"the last good checkpoint is {last} (nothing was written after it)" if last else \
                "no checkpoint was written yet"
            return TrainingDiverged(
                f"Training stopped at step {step}: {what} is not finite; {where}. Lower optim.learning_rate, keep "
                "optim.max_grad_norm on, prefer mixed_precision bf16 over fp16, or check the data; then --resume.",
                step=step, checkpoint=last)

        params = lora_params + projection_params + aligner_params
        step, micro = start_step, start_micro
        last: StepInfo | None = None
        bar = tqdm(total=run.max_steps, initial=start_step, desc="training", unit="step",
                   disable=not (progress and main), dynamic_ncols=True)
        while step < run.max_steps:
            started = time.perf_counter()
            sums = torch.zeros(3, device=device)
            for m in range(accum):
                inputs = to_inputs(next(batch_iter))
                with (nullcontext() if m == accum - 1 else accelerator.no_sync(joint)):
                    with accelerator.autocast():
                        losses = joint(inputs)
                    if not all_finite(losses.flow, losses.infonce):
                        model.clear_tokens()
                        raise diverged(step + 1, f"the loss (flow {float(losses.flow):.4g}, InfoNCE "
                                                 f"{float(losses.infonce):.4g})")
                    accelerator.backward(losses.total / accum)
                model.clear_tokens()
                sums += torch.stack([losses.total.detach(), losses.flow, losses.infonce]).float() / accum
                micro += 1
            max_norm = optim.max_grad_norm if optim.max_grad_norm > 0 else float("inf")
            grad_norm = accelerator.clip_grad_norm_(params, max_norm)
            if accelerator.mixed_precision != "fp16" and not all_finite(torch.as_tensor(grad_norm)):
                raise diverged(step + 1, "the gradient norm")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            model.aligner.clamp_logit_scale_()
            step += 1

            total, flow, infonce = (float(v) for v in accelerator.reduce(sums, reduction="mean"))
            last = StepInfo(step, total, flow, infonce, float(scheduler.get_last_lr()[0]), float(grad_norm),
                            time.perf_counter() - started)
            if main:
                metrics.append({"step": step, "loss": total, "flow": flow, "infonce": infonce, "lr": last.lr,
                                "grad_norm": last.grad_norm, "seconds": last.seconds})
                if writer is not None:
                    for key in ("loss", "flow", "infonce", "lr", "grad_norm", "seconds"):
                        writer.add_scalar(f"train/{key}", getattr(last, key), step)
            bar.set_postfix(loss=f"{total:.4f}", flow=f"{flow:.4f}", nce=f"{infonce:.4f}", lr=f"{last.lr:.1e}")
            bar.update()
            if step % run.log_every == 0 or step == run.max_steps:
                logger.info("step %d/%d loss %.5f flow %.5f infonce %.5f lr %.3g grad %.3g %.2f s/step", step,
                            run.max_steps, total, flow, infonce, last.lr, last.grad_norm, last.seconds)
            if step % run.checkpoint_every == 0 or step == run.max_steps:
                _save(accelerator, joint, optimizer, scheduler, out, step, micro, config, trainable_names,
                      keep=run.keep_checkpoints, sharded=fsdp, extra={"manifest_sha256": manifest_sha})
                logger.info("checkpoint %s", checkpointing.checkpoint_dir(out, step))
                if main and step < run.max_steps:
                    feedback.plot_losses(metrics.read(), out / feedback.CURVE_NAME)
            for callback in callbacks:
                callback(last, model)
            if run.stop_after_step is not None and step >= run.stop_after_step and step < run.max_steps:
                bar.close()
                raise StopRequested(step)
        bar.close()

        outputs = None
        accelerator.wait_for_everyone()
        if main:
            meta = output_metadata(config.to_json(), base, step)
            outputs = export_outputs(out, transformer=model.transformer, aligner=model.aligner, metadata=meta)
            feedback.plot_losses(metrics.read(), out / feedback.CURVE_NAME)
            logger.info("wrote %s, %s, %s and %s", outputs.aligner.name, outputs.lora.name, outputs.lora_comfy.name,
                        feedback.CURVE_NAME)
        if writer is not None:
            writer.close()
        accelerator.wait_for_everyone()
        return TrainResult(out, outputs, step, last, index.report, resume_path)
    except (FaithfulFacesError, StopRequested) as exc:
        logger.error("%s", exc)
        raise
    finally:
        feedback.close_logging()


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
