"""The seed's shape, for comparison only: one process holding the model, its micro-batcher and ``POST /score``.

The same code as the split deployment (the router's decoder, the predictor's :class:`AudioScoreModel` with its
dynamic batcher and reference store, from :func:`predictors.server.build_models`), minus the split: the decoded
samples go to the model in process instead of over V2 to another process. ``bench/bench_single.py`` runs it
beside router + predictor to track what the split costs.

Run: ``python bench/single_process.py --config C --port P`` (settings from the environment as usual).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile  # module level: the route's annotations resolve here

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def create_app(config: str) -> Any:
    import numpy as np
    from kserve.protocol.infer_type import InferInput, InferRequest

    from audio_score.audio import decode_audio
    from audio_score.env_settings import PredictorEnv
    from audio_score.settings import load_settings
    from audio_score.threads import apply_torch_threads
    from predictors.server import build_models, check_loaded

    settings = load_settings(PredictorEnv, config)
    apply_torch_threads(settings.env)
    model = check_loaded(build_models(settings))[0]
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="decode")
    app = FastAPI()

    @app.post("/score")
    async def score(
        uid: Annotated[str, Form()], cid: Annotated[str, Form()], audio: Annotated[UploadFile, File()]
    ) -> dict[str, Any]:
        data = await audio.read()
        decode = functools.partial(
            decode_audio, data, sampling_rate=settings.config.target_sampling_rate, backend=settings.config.decoder
        )
        samples = await asyncio.get_running_loop().run_in_executor(pool, decode)
        tensors = [InferInput("audio", [1, samples.size], "FP32"), InferInput("uid", [1], "BYTES")]
        tensors.append(InferInput("cid", [1], "BYTES"))
        tensors[0].set_data_from_numpy(samples.reshape(1, -1))
        tensors[1].set_data_from_numpy(np.array([uid.encode()], dtype=np.object_))
        tensors[2].set_data_from_numpy(np.array([cid.encode()], dtype=np.object_))
        # Model.__call__: preprocess -> predict -> postprocess, as kserve's data plane runs it.
        response, _ = await model(InferRequest(model_name=model.name, infer_inputs=tensors), {})
        result: dict[str, Any] = {}
        for out in response.outputs:
            value = out.as_numpy().reshape(-1)[0]
            result[out.name] = value.decode() if isinstance(value, bytes) else float(value)
        return {"model": model.name, **result}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # kserve parses sys.argv at import and would take --config for its own flag
    uvicorn.run(create_app(args.config), host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
