"""MONAI Label train task ``knee_refinement``: the click network, from simulated users.

Samples: a labelled case (the datastore's final labels, i.e. every submitted correction, plus
``synthetic_cases`` knees synthesised from procedural label maps), one structure, a plausible wrong
mask of it (lib/interactive/simulation.corrupt), clicks at the centres of its largest error regions,
a crop at the image's NATIVE resolution around the first click; target: the true structure.
Half the samples are made the way the server is used: clicks one after another, each written back
from the network being trained, and the sample is the state before the next click (the crop around
that click). Validation runs
the benchmark's protocol (5 clicks per structure) on held-out cases; the mean Dice over those clicks
decides promotion: above the random walker's and the promoted network's on the same cases. Versions
live in their own ModelStore.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.losses import DiceCELoss
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask
from scipy import ndimage

from lib.infers.knee_segmentation import pick_device
from lib.interactive.clicks import largest_error_click
from lib.interactive.network import ClickNetConfig, build_click_network, click_network_from_state, click_state
from lib.interactive.refine import Refiner, click_input, network_refiner, walker_refiner
from lib.interactive.simulation import MAX_FALSE_BLOB_MM, corrupt, error_clicks, run_clicks, starting_labels
from lib.model_store import ModelStore
from lib.precision import autocast, grad_scaler
from lib.trainers.options import checked_options
from lib.trainers.training_data import fixed_split, load_pair

logger = logging.getLogger(__name__)

DEFAULTS = {
    "max_epochs": 20,
    "iterations_per_epoch": 32,
    "batch_size": 2,
    "learning_rate": 1e-3,
    "max_clicks": 5,  # clicks per training sample: 1..max_clicks
    "synthetic_cases": 0,  # procedural phantom knees added to the datastore's labelled images; one in
    # four of them validates (split_synthetic)
    # Share of samples made by the serving protocol with the network being trained in the loop
    # (training_sample): without them a network drifts over later clicks (BENCHMARKS.md, Interactive).
    "clicks_in_the_loop": 0.5,
    "validation_clicks": 5,
    "seed": 0,
    "init": "promoted",  # or "scratch", or a kept version such as "v0007"
}
RANGES = {"max_epochs": (1, math.inf), "iterations_per_epoch": (1, math.inf), "batch_size": (1, math.inf),
          "learning_rate": (0, 1), "max_clicks": (1, math.inf), "synthetic_cases": (0, math.inf),
          "clicks_in_the_loop": (0, 1), "validation_clicks": (1, math.inf), "seed": (0, 2**32 - 1)}
# Of these, OAI-ZIB knees have femur and femoral and patellar cartilage; the rest are scored on knees
# that label them (the synthesised knee kept for validation, submitted labels with menisci).
VALIDATION_STRUCTURES = ("femur", "femoral_cartilage", "lateral_tibial_cartilage", "patellar_cartilage",
                         "medial_meniscus", "fibula")


def _case_arrays(image: sitk.Image, labels: sitk.Image) -> tuple[np.ndarray, np.ndarray, tuple]:
    return (sitk.GetArrayFromImage(image).astype(np.float32), sitk.GetArrayFromImage(labels).astype(np.uint8),
            tuple(image.GetSpacing()[::-1]))


def synthetic_cases(n: int, seed: int, role: str = "train") -> list[tuple[np.ndarray, np.ndarray, tuple]]:
    """``n`` phantom knees. Training and validation phantoms come from separate seed spaces, so a phantom
    that validates never trained in any run of the same seed, whatever its ``synthetic_cases`` (with one
    list split by position, the knee that validated with 4 had trained with 8, in the run continued)."""
    from lib.evaluation.training_datastore import stable_seed
    from lib.synthesis import make_knee_phantom, synthesize_pair

    cases = []
    for k in range(n):
        if role == "train":
            knee_seed, image_seed = 10_000 + seed * 100 + k, 20_000 + seed * 100 + k
        else:
            knee_seed, image_seed = (stable_seed("refinement phantom", role, what, seed, k)
                                     for what in ("knee", "image"))
        image, labels = synthesize_pair(make_knee_phantom(knee_seed), image_seed)
        cases.append(_case_arrays(image, labels))
    return cases


def validating_share(n: int) -> int:
    """How many of ``n`` synthesised knees validate: one in four (at least one, when there are two or
    more). They are the only validation knees with menisci, split tibial plates and fibula, and one knee
    alone makes a noisy score for those (BENCHMARKS.md, Interactive)."""
    return max(1, n // 4) if n > 1 else 0


def split_synthetic(n: int, seed: int) -> tuple[list, list]:
    """(training, validation) synthesised knees of ``n`` (``validating_share`` of them validate)."""
    held = validating_share(n)
    return synthetic_cases(n - held, seed), synthetic_cases(held, seed, role="validation")


def _crop(arrays, centre_zyx, patch):
    """Crops of ``patch`` voxels centred on ``centre_zyx``, zero-padded where the volume ends."""
    shape = arrays[0].shape
    lo = [int(c) - p // 2 for c, p in zip(centre_zyx, patch)]
    src = tuple(slice(max(a, 0), min(a + p, s)) for a, p, s in zip(lo, patch, shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo))
    out = []
    for array in arrays:
        crop = np.zeros(array.shape[:-3] + tuple(patch), array.dtype)
        crop[(Ellipsis,) + dst] = array[(Ellipsis,) + src]
        out.append(crop)
    return out


def sample_region(truth: np.ndarray, spacing_zyx, patch) -> tuple[slice, slice, slice]:
    """The structure's bounding box grown by what ``corrupt`` may add beyond it (a false blob of up to
    6 mm on a voxel 2 voxels out) and by half a training crop: a crop around any click is the same
    taken from this region as from the whole case, and no error region touches its border."""
    box = ndimage.find_objects(truth.view(np.uint8))[0]
    reach = np.ceil(MAX_FALSE_BLOB_MM / np.asarray(spacing_zyx, float)).astype(int) + 3 + np.asarray(patch) // 2
    return tuple(slice(max(int(s.start - r), 0), min(int(s.stop + r), n)) for s, r, n in zip(box, reach, truth.shape))


def training_sample(image, labels, spacing_zyx, config: ClickNetConfig, rng, max_clicks: int,
                    in_the_loop: Refiner | None = None):
    """(input (4, z, y, x), target (1, z, y, x)) or None when the case has no structure.

    Without ``in_the_loop``: a corrupted mask and 1..max_clicks clicks on its error regions, all at
    once. With it (the network being trained, as the server writes it back): the serving protocol,
    1..max_clicks-1 clicks each refined in turn, then the next click on what that left; the sample
    is that last state. Only so does the network see what it meets from the second click on: a mask
    that earlier clicks already fixed (their clicks now lie in right regions) and its own errors."""
    counts = np.bincount(labels.ravel())  # np.unique sorts the whole volume: 10x slower
    # Group values too (OAI-ZIB's one tibial cartilage, 20): the network refines whatever structure its
    # mask channel shows, and without them it would never see tibial cartilage on OAI-ZIB knees.
    present = [int(v) for v in np.flatnonzero(counts) if v > 0]
    if not present:
        return None
    truth = labels == present[int(rng.integers(len(present)))]
    # Everything below (corruption, error regions, clicks, the crop) happens near the structure: on its
    # region alone a sample costs a fraction of the whole volume's time and comes out the same.
    region = sample_region(truth, spacing_zyx, config.patch)
    image, truth = image[region], truth[region]
    mask = corrupt(truth, spacing_zyx, rng)
    if in_the_loop is None:
        fg, bg = error_clicks(mask, truth, spacing_zyx, int(rng.integers(1, max_clicks + 1)))
        centre = (fg + bg)[0] if fg or bg else None
    else:
        mask, fg, bg, centre = _clicks_in_the_loop(image, mask, truth, spacing_zyx, in_the_loop,
                                                   int(rng.integers(1, max(max_clicks, 2))))
    if centre is None:  # nothing wrong: still teach "keep it", around a structure voxel
        idx = np.argwhere(truth)
        k, j, i = idx[int(rng.integers(len(idx)))]
        centre = (int(i), int(j), int(k))
        fg = fg + [centre]
    i, j, k = centre
    crop_image, crop_mask, crop_truth = _crop([image, mask, truth], (k, j, i), config.patch)
    lo = np.array([k, j, i]) - np.array(config.patch) // 2

    def local(points):
        return [p for p in ((int(a - lo[2]), int(b - lo[1]), int(c - lo[0])) for a, b, c in points)
                if all(0 <= v < s for v, s in zip(p[::-1], config.patch))]

    x = click_input(crop_image, crop_mask, local(fg), local(bg), spacing_zyx, config.click_sigma_mm)
    if rng.random() < 0.5:  # left-right flip; the clicks' maps flip with the image
        x, crop_truth = x[..., ::-1], crop_truth[..., ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(crop_truth[None], dtype=np.float32)


def mean_over_clicks(dice_trace: list[float], clicks: int) -> float:
    """Mean Dice after clicks 1..``clicks`` of a trace (start first); a trace that stopped early
    (the structure was right) keeps its last Dice for the clicks it did not need."""
    after = dice_trace[1:] + [dice_trace[-1]] * (clicks + 1 - len(dice_trace))
    return float(np.mean(after[:clicks]))


def _clicks_in_the_loop(image, mask, truth, spacing_zyx, refiner: Refiner, rounds: int):
    """(mask, positive clicks, negative clicks, newest click or None): ``rounds`` clicks of the
    benchmark's protocol refined by ``refiner``, then the click a user would make next."""
    trace = run_clicks(mask.astype(np.uint8), truth, 1, refiner.click_step(image, 1, spacing_zyx), spacing_zyx, rounds)
    mask = trace.labels == 1
    fg = [tuple(c["ijk"]) for c in trace.clicks if c["positive"]]
    bg = [tuple(c["ijk"]) for c in trace.clicks if not c["positive"]]
    newest = largest_error_click(mask, truth, spacing_zyx)
    if newest is None:
        return mask, fg, bg, None
    (fg if newest.positive else bg).append(newest.ijk)
    return mask, fg, bg, newest.ijk


class KneeRefinementTrainer(TrainTask):
    def __init__(self, store: ModelStore, schema, description: str, config: ClickNetConfig | None = None):
        super().__init__(description)
        self.store = store
        self.schema = schema
        self.default_config = config or ClickNetConfig()

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
        train_items, val_items = fixed_split(datalist, self.store.root / "split.json") if datalist else ([], [])
        train = [_case_arrays(*load_pair(item, self.schema)) for item in (train_items or val_items)]
        validation = [_case_arrays(*load_pair(item, self.schema)) for item in val_items]
        synthetic_train, synthetic_validation = split_synthetic(int(options["synthetic_cases"]), seed)
        train += synthetic_train
        validation += synthetic_validation
        if not train:
            raise ValueError("No labelled images in the datastore and synthetic_cases is 0: nothing to train on")
        validated_on_training_data = not validation  # said in the record, as the segmentation task does
        validation = validation or train[:1]

        config, network, started_from = self._initial(options["init"])
        network.to(device)
        version = self.store.new_version()
        started = time.time()
        loss_fn = DiceCELoss(sigmoid=True)
        optimizer = torch.optim.AdamW(network.parameters(), lr=float(options["learning_rate"]), weight_decay=1e-5)
        epochs, iterations = int(options["max_epochs"]), int(options["iterations_per_epoch"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * iterations))
        scaler = grad_scaler(device)
        logger.info(f"Training refinement {version} on {device}: {len(train)} train / {len(validation)} "
                    "validation cases")
        # A network is promoted only when it beats what the server runs without one (the random walker)
        # on the same held-out protocol: training must never make interactive correction worse.
        clicks = int(options["validation_clicks"])
        baseline = self.validate(walker_refiner(), validation, clicks)
        logger.info(f"Random-walker baseline on the validation cases: {baseline}")
        # The promoted network is measured again on THIS run's cases: its stored score may come from
        # other ones (the datastore's validation side grows with submitted labels).
        bar = {"random_walker": baseline["mean_dice"]}
        incumbent = self.store.load_promoted()
        if incumbent:
            inc_config, inc_network = click_network_from_state(incumbent[1])
            bar[incumbent[0]] = self.validate(network_refiner(incumbent[0], inc_network, inc_config, device),
                                              validation, clicks)["mean_dice"]
        logger.info(f"To be promoted, a version must beat {bar}")
        best = {"mean_dice": -1.0}
        history = []
        in_loop_share = float(options["clicks_in_the_loop"])
        trained = network_refiner(version, network, config, device)  # the network being trained, as served
        for epoch in range(1, epochs + 1):
            losses = []
            for _ in range(iterations):
                network.eval()  # samples with the network in the loop see what the server would propose
                batch = []
                while len(batch) < int(options["batch_size"]):
                    loop = trained if in_loop_share > 0 and rng.random() < in_loop_share else None
                    sample = training_sample(*train[int(rng.integers(len(train)))], config, rng,
                                             int(options["max_clicks"]), in_the_loop=loop)
                    if sample is not None:
                        batch.append(sample)
                network.train()
                x = torch.from_numpy(np.stack([b[0] for b in batch])).to(device)
                y = torch.from_numpy(np.stack([b[1] for b in batch])).to(device)
                with autocast(device, training=True):
                    logits = network(x)
                loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(float(loss.detach()))
            network.eval()
            dice = self.validate(trained, validation, clicks)
            record = {"epoch": epoch, "loss": float(np.mean(losses)), **dice}
            history.append(record)
            if dice["mean_dice"] > best["mean_dice"]:
                best = {"epoch": epoch, **dice}
                self.store.save(version, click_state(config, network), {
                    "version": version, "best_epoch": epoch, "mean_dice": dice["mean_dice"], "dice": dice["dice"],
                    "options": {**options, "started_from": started_from}, "config": config.to_dict(),
                    "validation": f"mean Dice over simulated clicks 1-{options['validation_clicks']}",
                    "random_walker_baseline": baseline, "promotion_bar": bar,
                    "validated_on_training_data": validated_on_training_data,
                    "seconds": round(time.time() - started, 1), "history": history})
                if dice["mean_dice"] > max(bar.values()):
                    self.store.promote(version, dice["mean_dice"])
            logger.info(f"refinement {version} epoch {epoch}/{epochs} loss {record['loss']:.4f} Dice {dice['dice']}")
            self.store.write_training_stats({
                "version": version, "status": "running", "epoch": epoch, "max_epochs": epochs, "loss": record["loss"],
                "val_dice": dice["dice"], "device": str(device), "start_ts": started})
        summary = {"version": version, "status": "done",
                   "promoted": (self.store.promoted() or {}).get("version") == version,
                   "best_epoch": best.get("epoch"), "mean_dice": best["mean_dice"],
                   "random_walker_mean_dice": baseline["mean_dice"], "promotion_bar": bar, "device": str(device),
                   "seconds": round(time.time() - started, 1), "niceness": os.nice(0)}
        self.store.write_training_stats(summary)
        logger.info(f"Refinement training finished: {summary}")
        return summary

    def _initial(self, init: str):
        """(config, network, the version it starts from or None): a kept version's weights go on
        training with their own architecture, and with this server's training crop and write-back (so
        a fine-tune can change those)."""
        loaded = self.store.load_start(init)
        if loaded is None:
            return self.default_config, build_click_network(self.default_config), None
        config, network = click_network_from_state(loaded[1])
        architecture = {k: getattr(config, k) for k in ClickNetConfig.ARCHITECTURE}
        return replace(self.default_config, **architecture), network, loaded[0]

    def validate(self, refiner: Refiner, cases, clicks: int) -> dict[str, Any]:
        """The benchmark's protocol from a corrupted start, per structure: the mean Dice over clicks
        1..``clicks`` (a structure that reaches the truth keeps its Dice). The mean over clicks, not
        the Dice after the last one, so that a refiner which gains early and then drifts, or gains
        only late, scores below one that gains early and keeps it."""
        rng = np.random.default_rng(1234)  # the same starting masks every epoch, and for the baseline
        per: dict[str, list[float]] = {}
        for image, labels, spacing in cases:
            for key in VALIDATION_STRUCTURES:
                value = self.schema.by_key[key].value
                truth = labels == value
                if not truth.any():
                    continue
                start = starting_labels(labels, value, spacing, rng)
                trace = run_clicks(start, truth, value, refiner.click_step(image, value, spacing), spacing, clicks)
                per.setdefault(key, []).append(mean_over_clicks(trace.dice, clicks))
        dice = {k: round(float(np.mean(v)), 4) for k, v in per.items()}
        return {"dice": dice, "mean_dice": float(np.mean(list(dice.values()))) if dice else 0.0}
