"""List a model folder's versions, and promote one by hand (roll back, or serve a version that does
better on the lab's own scans than on the validation knees that training ranks by).

    python MonaiLabelApp/model_versions.py MODEL_DIR                  # versions, scores, which one serves
    python MonaiLabelApp/model_versions.py MODEL_DIR --promote v0006  # serve v0006 from now on

MODEL_DIR is a model store (versions/, promoted.json): the server's ``model/knee_segmentation`` or
``model/knee_refinement``, or ``WORKDIR/model`` of train_from_label_maps.py. A running server picks up
a promotion at its next inference; no version is ever deleted, so a promotion is always reversible.
To train on from a version that was not promoted: ``train_from_label_maps.py --init v0006`` (or the
training request's ``"init": "v0006"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from lib.model_store import DamagedFile, ModelStore  # noqa: E402


def started_from(options: dict) -> str | None:
    """The version a run's weights came from, "scratch", or None where an older record does not say."""
    if "started_from" in options:
        return str(options["started_from"] or "scratch")
    return "scratch" if options.get("init") == "scratch" else None


def serving(store: ModelStore) -> str | None:
    """The promoted version; None (and why, on stderr) when promoted.json is missing or damaged, so that
    --promote can still repair it."""
    try:
        return (store.promoted() or {}).get("version")
    except DamagedFile as error:
        print(f"no version serves: {error}", file=sys.stderr)
        return None


def record_value(metrics: dict, key: str, kind: type | tuple[type, ...]):
    """``metrics[key]`` when it is of ``kind``, else None: a record edited by hand (a number written as
    text, "options": null) must not stop the listing that is used to repair a model folder."""
    value = metrics.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def version_rows(store: ModelStore) -> list[dict]:
    promoted = serving(store)
    rows = []
    for version in store.versions():
        metrics = store.metrics(version) or {}
        rows.append({
            "version": version,
            "serving": version == promoted,
            "validation_mean_dice": record_value(metrics, "mean_dice", (int, float)),
            "best_epoch": record_value(metrics, "best_epoch", int),
            "started_from": started_from(record_value(metrics, "options", dict) or {}),
            "promotion_bar": record_value(metrics, "promotion_bar", (int, float)),
        })
    return rows


def format_rows(rows: list[dict]) -> str:
    def number(value) -> str:
        return "-" if value is None or value < 0 else f"{value:.4f}"

    lines = [f"{'':2}{'version':<9}{'val. Dice':>10}{'epoch':>7}  {'bar':>7}  started from"]
    for row in rows:
        lines.append(f"{'*' if row['serving'] else '':2}{row['version']:<9}{number(row['validation_mean_dice']):>10}"
                     f"{row['best_epoch'] if row['best_epoch'] is not None else '-':>7}  "
                     f"{number(row['promotion_bar']):>7}  {row['started_from'] or '-'}")
    lines.append("* serves inference. val. Dice: the version's mean validation Dice (its own run's cases); "
                 "bar: the promoted model's Dice on the same cases when the run began.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a model store: versions/ and promoted.json")
    parser.add_argument("--promote", metavar="VERSION", help="serve this version from now on")
    args = parser.parse_args(argv)
    store = ModelStore(args.model_dir)
    if not store.versions_dir.is_dir():
        raise SystemExit(f"{args.model_dir}: not a model folder (no versions/ in it)")
    if args.promote:
        try:
            store.check_version(args.promote)
        except ValueError as error:
            raise SystemExit(f"--promote: {error}") from None
        before = serving(store)
        store.promote(args.promote, record_value(store.metrics(args.promote) or {}, "mean_dice", (int, float)),
                      by="hand")
        print(f"promoted {args.promote} (was {before or 'none'})")
    rows = version_rows(store)
    print(format_rows(rows))
    return rows


if __name__ == "__main__":
    main()
