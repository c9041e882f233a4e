"""The served backend: any OpenAI-compatible chat-completions endpoint (a vLLM or SGLang server you run,
or a provider), through the `openai` client.

- `base_url`, `model` (the served model name), `timeout` seconds per request, `retries`: the client's own
  retry loop (exponential backoff with jitter on connection errors, timeouts, 408/409/429 and 5xx);
- `concurrency`: at most this many requests in flight from this process (a thread pool per batch, and a
  process-wide semaphore, so that the concurrent scorer and the score stage together stay under it);
- the API key is read from the environment variable named by `api_key_env` when the client is built, and
  is never put in the identity, a record, a cache entry or a log line (an endpoint without keys gets the
  placeholder "EMPTY", as vLLM's docs use);
- identity: the served model name and the `version` the config declares (required: a served name such
  as "gpt-4.1" does not say which weights answer; the declared version is what makes a cached answer
  attributable). The server's answer names its model and fingerprint; both go into each reply's `meta`, and
  a mismatch with the configured name is logged.

Images travel as PNG data URLs (lossless; VIEScore's GPT path sent JPEG), text first, then the images.
"""
from __future__ import annotations

import base64
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from harness.judges.base import JudgeRequest
from harness.store import png_bytes

log = logging.getLogger("harness")


def data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def chat_messages(request: JudgeRequest) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": request.text},
                                         *({"type": "image_url", "image_url": {"url": data_url(im)}}
                                           for im in request.images)]}]


class ServedBackend:
    def __init__(self, base_url: str, model: str, version: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 5, concurrency: int = 4) -> None:
        if not version:
            raise ValueError(f"judge.version is required for a served judge ({model!r}): declare which weights the "
                             "endpoint serves (e.g. the checkpoint's commit), so that cached answers are attributable")
        self.base_url, self.model, self.version = base_url, model, version
        self.api_key_env = api_key_env
        self.timeout, self.retries, self.concurrency = float(timeout), int(retries), max(1, int(concurrency))
        self._client: Any = None
        self._slots = threading.BoundedSemaphore(self.concurrency)

    def identity(self) -> dict[str, Any]:
        return {"backend": "served", "model": self.model, "version": self.version}

    @property
    def client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or "EMPTY",
                                  timeout=self.timeout, max_retries=self.retries)
        return self._client

    def _one(self, request: JudgeRequest, seed: int) -> tuple[str, dict[str, Any]]:
        d = request.decoding
        options: dict[str, Any] = {"temperature": 0.0 if d.greedy else d.temperature, "top_p": 1.0 if d.greedy else d.top_p,
                                   "max_tokens": d.max_new_tokens}
        if not d.greedy:
            options["seed"] = seed
            if d.top_k:
                options["extra_body"] = {"top_k": d.top_k}  # vLLM/SGLang extension; providers ignore or refuse it
        with self._slots:
            response = self.client.chat.completions.create(model=self.model, messages=chat_messages(request), **options)
        choice = response.choices[0]
        if response.model and response.model != self.model:
            log.warning("served judge answered as %r, configured %r", response.model, self.model)
        usage = getattr(response, "usage", None)
        meta = {"served_model": response.model, "system_fingerprint": getattr(response, "system_fingerprint", None),
                "finish_reason": choice.finish_reason,
                "prompt_tokens": getattr(usage, "prompt_tokens", None), "new_tokens": getattr(usage, "completion_tokens", None)}
        return choice.message.content or "", meta

    def generate(self, requests: list[JudgeRequest], seeds: list[int]) -> list[tuple[str, dict[str, Any]]]:
        if len(requests) == 1:
            return [self._one(requests[0], seeds[0])]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests, seeds))
