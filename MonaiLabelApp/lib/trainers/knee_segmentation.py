"""MONAI Label train task for the coarse-to-fine knee model.

Each run: fixed split -> cache working grids -> train both networks on random crops (mixed precision
on a GPU) -> validate the whole inference pipeline on held-out cases -> write a new model version
with per-structure Dice, and promote it when it beats the promoted one, measured again on the same
validation cases. Progress goes to the log
(which MONAI Label's /train status shows) and to train_stats.json (which /info shows).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from lib.evaluation.metrics import structure_dice
from lib.infers.knee_segmentation import pick_device
from lib.losses import UnionAwareDiceCELoss
from lib.model_store import ModelStore
from lib.networks import KneeModelConfig, KneeNetworks
from lib.precision import autocast, grad_scaler
from lib.segmenter import JOINT_KINDS, KneeSegmenter
from lib.trainers.options import checked_options
from lib.trainers.training_data import CROP_CENTRES, augment, fixed_split, load_pair, prepare_case, random_crop

logger = logging.getLogger(__name__)

DEFAULTS = {
    "max_epochs": 50,
    "iterations_per_epoch": 0,  # 0: one pass over the training cases, at least 8 iterations
    "learning_rate": 2e-3,
    "val_interval": 1,
    "seed": 0,
    "init": "promoted",  # or "scratch", or a kept version such as "v0006"
    "crop_centres": "voxels",  # or "classes": each label value centres crops alike (random_crop)
}
RANGES = {"max_epochs": (1, math.inf), "iterations_per_epoch": (0, math.inf), "learning_rate": (0, 1),
          "val_interval": (1, math.inf), "seed": (0, 2**32 - 1), "crop_centres": CROP_CENTRES}


class KneeSegmentationTrainer(TrainTask):
    def __init__(self, store: ModelStore, schema, config: KneeModelConfig, description: str,
                 fine_tune_overrides: dict | None = None):
        super().__init__(description)
        self.store = store
        self.schema = schema
        self.default_config = config
        # Box and crop settings given explicitly to the server, applied to a fine-tuned model too.
        self.fine_tune_overrides = dict(fine_tune_overrides or {})
        self.joint_values = [s.value for s in schema.structures if s.kind in JOINT_KINDS]

    def config(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def stats(self) -> dict[str, Any]:
        return self.store.training_stats()

    def __call__(self, request, datastore: Datastore) -> dict[str, Any]:
        options = checked_options(request, DEFAULTS, RANGES)
        seed = int(options["seed"])
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        device = pick_device(request.get("device"))

        datalist = [d for d in datastore.datalist() if d.get("label")]
        if not datalist:
            raise ValueError("No labelled images in the datastore: submit at least one label before training")
        train_items, val_items = fixed_split(datalist, self.store.root / "split.json")
        if not train_items:
            train_items = val_items
        validation_items = val_items or train_items
        networks, started_from = self._initial_networks(options["init"], seed)
        config = networks.config
        networks.to(device)
        # The promoted model is measured again on THIS run's validation cases: its stored score may come
        # from other cases (the validation side grows with submitted labels) or from an older inference
        # pipeline, and a stale score as the bar can promote a worse model or keep a better one out.
        bar = -1.0
        incumbent = self.store.load_promoted()
        if incumbent:
            bar = self.validate(KneeNetworks.from_state(incumbent[1]), validation_items, device)["mean_dice"]
            logger.info(f"Promoted {incumbent[0]} on this run's validation cases: mean Dice {bar:.4f}")
        version = self.store.new_version()
        started = time.time()
        logger.info(f"Training {version} on {device}: {len(train_items)} train / {len(val_items)} validation cases")

        cases = [prepare_case(item, config, self.joint_values, self.schema) for item in train_items]
        loss_fn = UnionAwareDiceCELoss(config.num_classes, self.schema.group_members())
        params = list(networks.coarse.parameters()) + list(networks.fine.parameters())
        optimizer = torch.optim.AdamW(params, lr=float(options["learning_rate"]), weight_decay=1e-5)
        max_epochs = int(options["max_epochs"])
        iterations = int(options["iterations_per_epoch"]) or max(8, len(cases))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs * iterations)
        scaler = grad_scaler(device)

        best: dict[str, Any] = {"mean_dice": -1.0}
        history = []
        for epoch in range(1, max_epochs + 1):
            networks.coarse.train()
            networks.fine.train()
            losses = []
            for _ in range(iterations):
                case = cases[int(rng.integers(len(cases)))]
                loss = 0.0
                for net, image, labels, patch in (
                    (networks.coarse, case.coarse_image, case.coarse_labels, config.coarse_patch),
                    (networks.fine, case.fine_image, case.fine_labels, config.fine_patch),
                ):
                    x, y = augment(*random_crop(image, labels, patch, rng, centres=options["crop_centres"]), rng)
                    x = torch.from_numpy(x)[None, None].to(device)
                    y = torch.from_numpy(y.astype(np.int64))[None].to(device)
                    with autocast(device, training=True):
                        logits = net(x)
                    loss = loss + loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(float(loss.detach()))
            record = {"epoch": epoch, "loss": float(np.mean(losses))}
            if epoch % int(options["val_interval"]) == 0 or epoch == max_epochs:
                dice = self.validate(networks, validation_items, device)
                record.update(dice)
                if dice["mean_dice"] > best["mean_dice"]:
                    best = {"epoch": epoch, **dice}
                    self._save(version, networks, best, {**options, "started_from": started_from}, train_items,
                               val_items, started, history + [record], bar)
                    # Promoted as soon as a checkpoint beats the promoted model: a run stopped later keeps it.
                    if best["mean_dice"] > bar:
                        self.store.promote(version, best["mean_dice"])
            history.append(record)
            logger.info(
                f"{version} epoch {epoch}/{max_epochs} loss {record['loss']:.4f}"
                + (f" val mean Dice {record['mean_dice']:.4f} {record['dice']}" if "dice" in record else "")
            )
            self.store.write_training_stats(dict(
                version=version, status="running", epoch=epoch, max_epochs=max_epochs, loss=record["loss"],
                val_dice=record.get("dice"), mean_dice=record.get("mean_dice"), best_mean_dice=best["mean_dice"],
                device=str(device), start_ts=started,
            ))

        summary = {
            "version": version,
            "status": "done",
            "promoted": (self.store.promoted() or {}).get("version") == version,
            "best_epoch": best.get("epoch"),
            "mean_dice": best["mean_dice"],
            "promotion_bar": bar,
            "val_dice": best.get("dice"),
            "epochs": max_epochs,
            "device": str(device),
            "seconds": round(time.time() - started, 1),
            "niceness": os.nice(0),  # 10 in a server's background task process (lib/background_priority.py)
        }
        self.store.write_training_stats({**summary, "start_ts": started, "max_epochs": max_epochs, "epoch": max_epochs})
        logger.info(f"Training finished: {summary}")
        return summary

    def _initial_networks(self, init: str, seed: int = 0) -> tuple[KneeNetworks, str | None]:
        """(networks, the version they start from, or None from scratch: initial weights drawn with the
        run's ``seed``; KneeNetworks.create reseeds torch, so without it every seed began alike)."""
        loaded = self.store.load_start(init)
        if loaded is None:
            return KneeNetworks.create(self.default_config, seed=seed), None
        logger.info(f"Fine-tuning from version {loaded[0]}")
        networks = KneeNetworks.from_state(loaded[1])
        changed = {k: v for k, v in self.fine_tune_overrides.items() if getattr(networks.config, k) != v}
        if changed:
            logger.info(f"Fine-tuning with {changed} instead of {loaded[0]}'s "
                        f"{ {k: getattr(networks.config, k) for k in changed} }")
            networks.config = dataclasses.replace(networks.config, **changed)
        return networks, loaded[0]

    def validate(self, networks: KneeNetworks, items: list[dict], device: torch.device) -> dict[str, Any]:
        """Per-structure Dice of the full inference pipeline, on the original image grids."""
        segmenter = KneeSegmenter(networks, self.schema, device)
        per_structure: dict[str, list[float]] = {}
        for item in items:
            image, labels = load_pair(item, self.schema)
            prediction = sitk.GetArrayFromImage(segmenter.segment(image).labels)
            for key, value in structure_dice(prediction, sitk.GetArrayViewFromImage(labels), self.schema).items():
                per_structure.setdefault(key, []).append(value)
        dice = {k: round(float(np.mean(v)), 4) for k, v in per_structure.items()}
        return {"dice": dice, "mean_dice": float(np.mean(list(dice.values()))) if dice else 0.0}

    def _save(self, version, networks, best, options, train_items, val_items, started, history, bar) -> None:
        state = networks.state()
        state["coarse"] = {k: t.detach().cpu() for k, t in state["coarse"].items()}
        state["fine"] = {k: t.detach().cpu() for k, t in state["fine"].items()}
        metrics = {
            "version": version,
            "best_epoch": best["epoch"],
            "mean_dice": best["mean_dice"],
            "dice": best["dice"],
            "options": options,  # with "started_from": the version the weights came from (None: scratch)
            "train_cases": [i["image"].split("/")[-1] for i in train_items],
            "validation_cases": [i["image"].split("/")[-1] for i in val_items],
            "validated_on_training_data": not val_items,
            "promotion_bar": bar,  # the promoted model's mean Dice on the same cases (-1: none was promoted)
            "seconds": round(time.time() - started, 1),
            "history": history,
        }
        self.store.save(version, state, metrics)
