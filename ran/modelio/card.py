"""Model cards for RAN checkpoints, rendered with huggingface_hub's ModelCard / ModelCardData / EvalResult.

A card shows only numbers that ``ran evaluate`` measured (one ``model-index`` entry per test subset);
the published numbers of the paper and of the reimplementation appear in a separate, clearly marked
reference table and never in the metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ran.errors import UserError
from ran.inference import precision_note
from ran.modelio.card_data import (
    PUBLISHED_REFERENCES,
    DatasetInfo,
    dataset_info,
    subset_label,
)

CITATION = """@article{wang2020region,
  title   = {Region Attention Networks for Pose and Occlusion Robust Facial Expression Recognition},
  author  = {Wang, Kai and Peng, Xiaojiang and Yang, Jianfei and Meng, Debin and Qiao, Yu},
  journal = {IEEE Transactions on Image Processing},
  volume  = {29},
  pages   = {4057--4069},
  year    = {2020},
  doi     = {10.1109/TIP.2019.2956143},
  eprint  = {1905.04075},
  archivePrefix = {arXiv}
}"""

NO_RESULTS_NOTE = "No evaluation results measured yet: this card shows no accuracy of these weights."


def _check_interval(subset: str, interval: Any) -> None:
    """A bootstrap ``interval`` entry (ran evaluate): its method, resamples and [lo, hi] fractions."""
    where = f"results[{subset!r}]['interval']"
    if not isinstance(interval, Mapping):
        raise UserError(f"{where}: expected a mapping with method, resamples and accuracy, got {interval!r}")
    if not isinstance(interval.get("method"), str) or not isinstance(interval.get("resamples"), int):
        raise UserError(f"{where}: expected 'method' (text) and 'resamples' (an integer)")
    for key in ("accuracy", "mean_class_accuracy"):
        bounds = interval.get(key)
        if bounds is None and key == "mean_class_accuracy":
            continue
        ok = isinstance(bounds, (list, tuple)) and len(bounds) == 2
        ok = ok and all(isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0 for v in bounds)
        if not ok or float(bounds[0]) > float(bounds[1]):
            raise UserError(f"{where}[{key!r}]: expected [low, high] fractions in 0..1, got {bounds!r}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_counts(subset: str, accuracy: float, correct: Any, total: Any) -> None:
    """``correct`` / ``total``, where given, are counts whose ratio is the accuracy (to 4 decimals): a card
    states all three, so they must tell the same story."""
    if correct is None and total is None:
        return
    if not (_is_count(correct) and _is_count(total)) or correct > total:
        raise UserError(
            f"results[{subset!r}]: expected counts 0 <= correct <= total, got correct={correct!r}, "
            f"total={total!r}"
        )
    if total and abs(correct / total - accuracy) > 5e-5:
        raise UserError(
            f"results[{subset!r}]: accuracy {accuracy:g} is not correct / total = {correct}/{total} = "
            f"{correct / total:.4f}"
        )


def validate_results(results: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Check a ``{'subset': {'accuracy': 0..1, 'correct': n, 'total': n}}`` mapping; keep only subsets.

    Top-level entries that are not dicts with an ``accuracy`` (e.g. run metadata in a results.json)
    are ignored; a subset with a missing or out-of-range accuracy is an error. An ``interval`` entry
    (``ran evaluate``'s bootstrap interval) is optional and checked when present.
    """
    out: dict[str, dict[str, Any]] = {}
    for subset, entry in (results or {}).items():
        if not isinstance(entry, Mapping) or "accuracy" not in entry:
            continue
        accuracy = entry["accuracy"]
        if not isinstance(accuracy, (int, float)) or not 0.0 <= float(accuracy) <= 1.0:
            raise UserError(f"results[{subset!r}]['accuracy']: expected a fraction in 0..1, got {accuracy!r}")
        _check_counts(str(subset), float(accuracy), entry.get("correct"), entry.get("total"))
        if "interval" in entry:
            _check_interval(str(subset), entry["interval"])
        out[str(subset)] = dict(entry)
    return out


def eval_results(results: Mapping[str, Any] | None, dataset: str | None) -> list[EvalResult]:
    """One model-index EvalResult (accuracy) per measured test subset."""
    info = dataset_info(dataset) or DatasetInfo(name="unknown", dataset_type="unknown", licence="")
    entries = []
    for subset, entry in validate_results(results).items():
        entries.append(
            EvalResult(
                task_type="image-classification",
                task_name="Facial expression recognition",
                dataset_type=info.dataset_type,
                dataset_name=subset_label(info, subset, entry.get("total")),
                dataset_config="default" if subset == "test" else subset,
                dataset_split="test",
                metric_type="accuracy",
                metric_name="Accuracy",
                metric_value=round(float(entry["accuracy"]), 6),
            )
        )
    return entries


def _interval_text(entry: Mapping[str, Any]) -> str:
    bounds = (entry.get("interval") or {}).get("accuracy")
    return f"{float(bounds[0]):.4f} - {float(bounds[1]):.4f}" if bounds else "-"


def _interval_method(results: dict[str, dict[str, Any]]) -> str:
    """The sentence under the table that says how the intervals were computed."""
    intervals = [entry["interval"] for entry in results.values() if entry.get("interval")]
    if not intervals:
        return ""
    first = intervals[0]
    level = round(100 * float(first.get("level", 0.95)))
    seed = f", seed {first['seed']}" if "seed" in first else ""
    return (
        f"\n\n{level} % intervals: {first['method']}, {first['resamples']} resamples{seed} (`ran evaluate`)."
    )


def _results_table(results: dict[str, dict[str, Any]], info: DatasetInfo | None) -> str:
    if not results:
        return f"**{NO_RESULTS_NOTE}**"
    columns = ["Subset", "Accuracy", "Correct / total"]
    with_intervals = any(entry.get("interval") for entry in results.values())
    if with_intervals:
        columns.insert(2, "95 % interval")
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for subset, entry in results.items():
        counts = f"{entry['correct']}/{entry['total']}" if "correct" in entry and "total" in entry else "-"
        cells = [
            subset_label(info, subset, entry.get("total")) if info else subset,
            f"{float(entry['accuracy']):.4f}",
            counts,
        ]
        if with_intervals:
            cells.insert(2, _interval_text(entry))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + _interval_method(results) + "\n\n" + precision_note(results)


def _references_table(dataset: str | None) -> str:
    rows = PUBLISHED_REFERENCES.get((dataset or "").lower().replace("-", ""), [])
    if not rows:
        return "No published reference numbers for this dataset."
    lines = ["| Source (published, not measured here) | Test set | Accuracy |", "| --- | --- | --- |"]
    lines += [f"| {source} | {test_set} | {value} |" for source, test_set, value in rows]
    return "\n".join(lines)


TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A Region Attention Network (RAN; Wang et al., IEEE TIP 2020, arXiv:1905.04075) for facial expression
recognition, packaged as a timm model by the `ran` package. The model cuts {{ num_regions }} regions from
each face (region 0 is the whole face), runs them through one shared `{{ backbone }}` backbone at
{{ region_size }} px, and pools the region features with self-attention and relation-attention
(`{{ attention }}` attention{% if attention == 'softmax' %}, the original code's
sigmoid-then-softmax{% endif %}).

- Architecture: `{{ architecture }}`; classes ({{ num_classes }}): {{ label_names }}
- Input: an aligned face crop, fed as RGB `(B, 3, H, W)` (`ran.transform_for(model)` prepares it)
  - colour: {{ colour_text }}
  - size: {{ size_text }}
  - pixels: {{ scaling_text }}
- Training data: {{ dataset_name }}

## Evaluation results (measured by `ran evaluate`)

{{ results_table }}

## Published numbers (references only)

These are the numbers reported by the paper and by the reimplementation this package grew from.
They were **not** measured on these weights and are not part of the model-index metadata.

{{ references_table }}

## How to use

```python
import ran, torch
from PIL import Image

model = ran.from_pretrained("{{ repo_id }}").eval()
# the same weights: timm.create_model("hf-hub:{{ repo_id }}", pretrained=True)
faces = ran.transform_for(model)(Image.open("face.jpg")).unsqueeze(0)  # {{ feed_text }}
probs = model(faces).softmax(-1)
# or a tensor: faces = torch.rand(1, 3, {{ height }}, {{ width }})  # {{ tensor_text }}
```

With transformers (after `import ran`; it skips `ran.from_pretrained`'s checks: for repositories you trust):

```python
import ran
from transformers import pipeline

classify = pipeline("image-classification", model="{{ repo_id }}")
```

{{ int8_text }}## Training

{% if training_command %}```bash
{{ training_command }}
```{% else %}Training command not recorded.{% endif %}

## Intended use

Research on facial expression recognition under pose and occlusion, and as a baseline. The model
classifies the expression shown in an already detected and aligned face crop; it does not detect
faces (`ran predict` does that first) and says nothing about a person's inner emotional state.

## Limitations

- Accuracy drops on faces with large head pose and with occlusion; the pose (> 30 and > 45 degrees) and
  occlusion subsets measure exactly these cases and should be read beside the overall test accuracy.
- FERPlus faces are 48x48 grayscale web images; other image sources, resolutions, demographics and
  posed-versus-spontaneous expressions shift the accuracy. Labels are crowd-sourced majority votes.
- Not suitable for decisions about people (hiring, policing, health, surveillance).

## Data licences

{{ dataset_licence }}
RAF-DB and AffectNet are research-only datasets; weights trained on them inherit those terms.

## Citation

```bibtex
{{ citation }}
```
"""


def input_facts(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the model takes, from its config.json: the input contract its ``model_args`` record (colour,
    face size, mean / std; ``RegionAttentionNet.set_input_format``), the face size from ``pretrained_cfg``
    where the model records none."""
    args = dict(config.get("model_args") or {})
    cfg = dict(config.get("pretrained_cfg") or {})
    face_size = args.get("face_size")
    height, width = [int(v) for v in (face_size or (cfg.get("input_size") or (3, 224, 224))[-2:])]
    mean = [float(v) for v in args.get("input_mean") or cfg.get("mean") or (0.0, 0.0, 0.0)]
    std = [float(v) for v in args.get("input_std") or cfg.get("std") or (1.0, 1.0, 1.0)]
    plain = not any(mean) and all(v == 1.0 for v in std)
    gray = args.get("input_color") == "gray"
    return {
        "height": height,
        "width": width,
        "colour_text": "gray (trained on gray faces: the model makes RGB input gray itself)"
        if gray
        else "RGB",
        "size_text": (
            f"{height}x{width} px, the face size training used (the model resizes other sizes to it "
            "itself, bilinear with antialiasing)"
            if face_size
            else f"any size (regions are cut from the face as given; {height}x{width} px by default)"
        ),
        "scaling_text": "scaled to 0..1"
        + (
            " without mean/std normalisation"
            if plain
            else f", then normalised with mean {mean} and std {std}"
        ),
        "feed_text": f"RGB, resized to {height}x{width}, 0..1" + ("" if plain else ", mean/std normalised"),
        "tensor_text": f"RGB {height}x{width} faces, 0..1 pixels"
        + ("" if plain else ", then (x - mean) / std"),
    }


def _int8_text(report: Mapping[str, Any] | None, repo_id: str) -> str:
    """The card's int8 section, from the report ``ran export --int8 --torch`` measured (empty without)."""
    if not report:
        return ""
    try:  # a hand-edited report is named, never a traceback
        check, speed = report["agreement"], report["faces_per_second"]
        measured = (
            f"{check['faces']} faces of the {check['split']} split: {check['unchanged']:.2%} of predictions "
            f"unchanged; accuracy int8 {check['accuracy_int8']:.4f}, float {check['accuracy_fp32']:.4f} "
            "[{:.4f}, {:.4f}]; ".format(*check["fp32_interval"])
            + f"{speed['int8']:.1f} vs {speed['fp32']:.1f} faces/s ({report['speedup']:.2f}x)"
        )
    except (KeyError, TypeError, ValueError, IndexError):
        raise UserError("int8 report: expected the one ran export --int8 --torch writes") from None
    return (
        "## int8 (PyTorch)\n\n"
        "This folder also holds `int8.json`, the activation ranges of an int8 version of these weights "
        "(`ran export --int8 --torch`). `ran predict`, `ran evaluate`, `ran robustness` and `ran app` run "
        f"it in int8 on the CPU (`ran predict photo.jpg --model {repo_id}`); `ran.from_pretrained` and "
        f"timm give the float model. Measured at export, against the float model on {measured} on the "
        "exporting machine's CPU.\n\n"
    )


def render_model_card(
    config: Mapping[str, Any],
    *,
    results: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
    training_command: str | None = None,
    license: str = "other",
    int8_report: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The README.md of a RAN repo folder, from its config.json, measured results (and int8 report)."""
    measured = validate_results(results)
    info = dataset_info(dataset)
    model_args = dict(config.get("model_args") or {})
    architecture = str(config.get("architecture", "ran"))
    label_names = list(config.get("label_names") or config.get("pretrained_cfg", {}).get("label_names") or [])
    repo_id = repo_id or f"ORG/{architecture}"
    region_size = model_args.get("region_size", "?")
    if isinstance(region_size, (list, tuple)):
        region_size = "x".join(str(s) for s in region_size)
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="timm",
        pipeline_tag="image-classification",
        license=license,
        license_name="dataset-terms" if license == "other" else None,
        tags=["image-classification", "timm", "facial-expression-recognition", "region-attention-network"],
        datasets=[info.dataset_type] if info else None,
        metrics=["accuracy"],
        eval_results=eval_results(measured, dataset) or None,
    )
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        title=repo_id.split("/")[-1],
        architecture=architecture,
        backbone=model_args.get("backbone", "?"),
        num_regions=len(model_args.get("regions") or []) or "several",
        region_size=region_size,
        attention=model_args.get("attention", "softmax"),
        num_classes=config.get("num_classes", len(label_names)),
        label_names=", ".join(label_names) or "not recorded",
        dataset_name=info.name if info else "not recorded",
        dataset_licence=info.licence if info else "Training data not recorded.",
        results_table=_results_table(measured, info),
        references_table=_references_table(dataset),
        repo_id=repo_id,
        training_command=training_command,
        int8_text=_int8_text(int8_report, repo_id),
        citation=CITATION,
        **input_facts(config),
    )


def card_results(card: ModelCard) -> dict[str, float]:
    """The measured accuracies a card's model-index holds, keyed by dataset config (for checks)."""
    out = {}
    for result in card.data.eval_results or []:
        key = "test" if result.dataset_config == "default" else result.dataset_config
        out[str(key)] = float(result.metric_value)
    return out


__all__ = [
    "CITATION",
    "NO_RESULTS_NOTE",
    "card_results",
    "eval_results",
    "input_facts",
    "render_model_card",
    "validate_results",
]
