"""The model card: a short markdown page from a fer-tune model's MLmodel metadata.

Written into the champion run and the registered model, and by `fer-tune models download`.
"""

from __future__ import annotations

TORCHSCRIPT_FILE = "model.torchscript.pt"  # among the registered model's extra files
CARD_FILE = "MODEL_CARD.md"
MLMODEL_FOLDER = "model"  # the MLflow model inside a `fer-tune models download` folder
INPUT = "float32 [N, 1, 48, 48], grayscale pixel values 0..255"


def model_card(meta: dict, name: str | None = None, version: str | None = None, aliases=()) -> str:
    """A short markdown card from a fer-tune model's MLmodel metadata (and its registry entry)."""
    title = f"{name} version {version}" if version else (name or "fer-tune emotion model")
    shown_aliases = f" — aliases: {', '.join(aliases)}" if aliases else ""
    metrics, data = meta.get("metrics", {}), meta.get("data", {})
    split = meta.get("eval_split", "test")
    lines = [
        f"# {title}{shown_aliases}",
        "",
        f"Facial-emotion classifier from fer-tune sweep `{meta.get('sweep')}`, trial `{meta.get('trial_id')}` "
        f"(checkpoint of epoch {meta.get('checkpoint_epoch')}).",
        "",
        f"- Input: {meta.get('input')}",
        f"- Output: {meta.get('output')}",
        f"- Classes: {', '.join(f'{i} {c}' for i, c in enumerate(meta.get('classes', [])))}",
        f"- Test-time augmentation: {meta.get('tta', 'flip')} (each face's views, probabilities averaged)",
        "",
        f"## Metrics on the {split} split",
        "",
        f"accuracy {metrics.get('accuracy', float('nan')):.4f}, macro-F1 {metrics.get('macro_f1', float('nan')):.4f}",
        "",
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
        *(
            f"| {c} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} |"
            for c in meta.get("classes", [])
            if (s := metrics.get("per_class", {}).get(c))
        ),
        "",
        "## Data",
        "",
        f"{data.get('source')} — fingerprint `{data.get('fingerprint')}`",
        "",
        "## Training configuration",
        "",
        *(f"- {key}: {value}" for key, value in meta.get("train_config", {}).items()),
        "",
        "## How to load",
        "",
        "```python",
        "import mlflow, numpy as np, torch",
        f"model = mlflow.pyfunc.load_model({f'models:/{name}/{version}' if version else MLMODEL_FOLDER!r})",
        "probabilities = model.predict(np.zeros((2, 1, 48, 48), np.float32))  # pixel values 0..255",
        f"scripted = torch.jit.load({TORCHSCRIPT_FILE!r})  # same input, same probabilities",
        "```",
        "",
        f"Command line: `fer-tune predict --model {MLMODEL_FOLDER} face.jpg [--detect-faces]`; serving: "
        f"`mlflow models serve -m {MLMODEL_FOLDER} --env-manager local` then POST "
        '`{"inputs": [[[[0.0, ...48 values], ...48 rows]]]}` to /invocations.',
        "",
    ]
    return "\n".join(lines)
