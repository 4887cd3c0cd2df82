"""Calling a model's predictor over V2: where it is, the binary tensor request, and what its errors mean here.

The router never runs a model: it sends decoded PCM to the predictor of the chosen model (one KServe
InferenceService per model in a cluster, one server for every model locally) and maps the predictor's answers
and failures onto the /score contract: refused connection -> one retry, then 503; timeout -> 504. Either one
opens the model's circuit breaker (router/breaker.py): until a readiness check answers again, that model's
requests get 503 with ``Retry-After`` at once instead of each waiting for the timeout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import numpy as np

from audio_score import v2
from audio_score.contract import DEADLINE_HEADER, deadline_header_value
from audio_score.settings import RouterSettings
from router.breaker import Breakers

log = logging.getLogger(__name__)


class PredictorError(Exception):
    """A predictor answer or failure, already mapped to the router's status code and a reason to show."""

    def __init__(
        self, status_code: int, detail: str, *, unreachable: bool = False, retry_after_s: int | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        #: The predictor could not be reached at all (as opposed to answering 503 itself, e.g. a full queue).
        self.unreachable = unreachable
        #: Seconds for the ``Retry-After`` header (set when the model's breaker is open).
        self.retry_after_s = retry_after_s


def predictor_base_url(settings: RouterSettings, model: str) -> str:
    """A per-model URL from AUDIO_SCORE_PREDICTOR_URLS, else the template with ``{model}`` replaced.

    A template without ``{model}`` names one server that hosts every model (``audio-score up``).
    """
    if model in settings.env.predictor_urls:
        return settings.env.predictor_urls[model]
    return settings.env.predictor_url_template.replace("{model}", model)


class PredictorClient:
    """One pooled keep-alive ``httpx.AsyncClient`` shared by every request of this worker, and the models'
    circuit breakers (opened here on timeouts and connection failures, closed by a readiness check that answers)."""

    def __init__(self, settings: RouterSettings, client: httpx.AsyncClient, breakers: Breakers | None = None) -> None:
        self.settings = settings
        self.client = client
        self.breakers = breakers or Breakers(settings.model_keys, poll_interval_s=2.0)

    def base_url(self, model: str) -> str:
        return predictor_base_url(self.settings, model)

    async def ready(self, model: str) -> tuple[bool, str]:
        """(ready, reason) from the predictor's per-model V2 readiness (``/v2/health/ready`` is always true).

        No answer opens the model's breaker; a 200 closes it (this is the breaker's background probe)."""
        url = v2.ready_url(self.base_url(model), model)
        breaker = self.breakers[model]
        try:
            response = await self.client.get(url, timeout=min(5.0, self.settings.env.predictor_timeout_s))
        except httpx.TimeoutException:
            reason = f"predictor at {self.base_url(model)} did not answer its readiness check in time"
            breaker.trip(reason)
            return False, reason
        except httpx.HTTPError as exc:
            reason = f"predictor at {self.base_url(model)} is unreachable ({type(exc).__name__})"
            breaker.trip(reason)
            return False, reason
        if response.status_code == 200:
            breaker.close()
            return True, "ready"
        if response.status_code == 404:
            return False, f"the predictor at {self.base_url(model)} does not serve model {model!r}"
        return False, f"the predictor reports model {model!r} not ready ({response.status_code})"

    async def score(
        self, model: str, samples: np.ndarray, uid: str, cid: str, *, wait_s: float | None = None
    ) -> dict[str, Any]:
        """Scores of ``samples`` against the reference uid/cid, from the model's predictor.

        With the model's breaker open this fails at once (503 + Retry-After) without touching the network.
        ``wait_s``: how many seconds the caller will still wait (default: ``predictor_timeout_s``). It travels to
        the predictor as :data:`DEADLINE_HEADER`, whose batcher refuses or drops work that cannot finish in time,
        and bounds this call's own timeout.
        """
        self.raise_if_open(model)
        budget = self.settings.env.predictor_timeout_s if wait_s is None else wait_s
        body, headers = v2.build_score_request(samples, uid, cid)
        headers[DEADLINE_HEADER] = deadline_header_value(budget)
        url = v2.infer_url(self.base_url(model), model)
        response = await self._post(url, body, headers, model, timeout_s=budget)
        if response.status_code == 200:
            try:
                return v2.parse_score_response(response.content, response.headers)
            except v2.V2ProtocolError as exc:
                raise PredictorError(502, f"the predictor for {model!r} sent an invalid response: {exc}") from None
        reason = v2.error_message(response.content)
        if response.status_code in (400, 404, 413, 503):
            retry = response.headers.get("retry-after", "")
            retry_after_s = int(retry) if retry.isdigit() and int(retry) > 0 else None
            raise PredictorError(response.status_code, reason, retry_after_s=retry_after_s)
        raise PredictorError(502, f"the predictor for {model!r} failed ({response.status_code}): {reason}")

    def raise_if_open(self, model: str) -> None:
        """:class:`PredictorError` 503 with a retry delay while ``model``'s breaker is open."""
        breaker = self.breakers[model]
        if breaker.open:
            raise PredictorError(503, breaker.refusal(), retry_after_s=breaker.retry_after_s)

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], model: str, *, timeout_s: float | None = None
    ) -> httpx.Response:
        wait = self.settings.env.predictor_timeout_s if timeout_s is None else timeout_s
        timeout = httpx.Timeout(wait, connect=min(5.0, wait))
        for attempt in (1, 2):
            try:
                return await self.client.post(url, content=body, headers=headers, timeout=timeout)
            except httpx.TimeoutException:
                detail = f"the predictor for {model!r} did not answer within {wait:g} s"
                # Only the router's own full timeout says the predictor is stuck; a caller's shorter deadline
                # running out says nothing about it, and must not fail everyone else's requests fast.
                if wait >= self.settings.env.predictor_timeout_s:
                    self.breakers[model].trip(detail)
                raise PredictorError(504, detail) from None
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                # A refused connection is often a predictor pod being replaced: one retry after a short pause.
                if attempt == 1:
                    log.warning("predictor connection failed, retrying", extra={"model": model, "url": url})
                    await asyncio.sleep(0.2)
                    continue
                detail = (
                    f"the predictor for {model!r} at {self.base_url(model)} is unreachable ({type(exc).__name__}); "
                    "retry later"
                )
                self.breakers[model].trip(detail)
                raise PredictorError(503, detail, unreachable=True) from None
            except httpx.HTTPError as exc:
                detail = f"the predictor for {model!r} failed: {type(exc).__name__}; retry later"
                self.breakers[model].trip(detail)
                raise PredictorError(503, detail, unreachable=True) from None
        raise AssertionError("unreachable")  # pragma: no cover
