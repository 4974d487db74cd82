"""The generation web app (Starlette): one page, a JSON job API and a one-call mp4 API.

Routes::

    GET  /                              the form (mode, file, sampler, steps, lambda, seed, ...)
    POST /api/jobs                      multipart form -> 202 {"id", "status", "position"}
    GET  /api/jobs/{id}                 state, queue position, step k of n, elapsed s, results
    GET  /api/jobs/{id}/files/{name}    a result's mp4 or spectrogram PNG
    POST /api/generate                  multipart form -> waits in the queue -> the first mp4
    GET  /static/app.css|app.js         the page's only assets

Every input check runs before a job is queued; a refused request is a 4xx with
``{"error": "<one line>"}``. Uploads are decoded from the app's temporary folder and deleted
at once; results live in per-job folders there (see ``jobs.JobQueue``).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from cmmd.apps.genapp import pages
from cmmd.apps.genapp.inputs import FIELDS, GenRequest, InputError, parse_fields, read_upload
from cmmd.apps.genapp.jobs import Job, JobQueue, QueueFull
from cmmd.apps.genapp.work import Progress, Result, render
from cmmd.diffusion.samplers import SAMPLERS
from cmmd.pipeline import Pipeline

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_RESULT_FILE = re.compile(r"^v\d+(\.mp4|_spec\.png)$")
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


def create_app(pipelines: dict[str, Pipeline], checkpoint: str, workdir: Path, max_upload_mb: float = 50.0,
               max_seconds: float = 10.0, max_waiting: int = 16) -> Starlette:
    """The app over ``pipelines`` (one per vocoder, sharing one model), writing under ``workdir``."""
    pipe = next(iter(pipelines.values()))
    info = pages.PageInfo(checkpoint, pipe.version, pipe.step, list(SAMPLERS), list(pipelines),
                          pipe.config.diffusion.num_steps, pipe.config.data.clip_frames / pipe.fps, max_seconds,
                          max_upload_mb)
    recorded = {"checkpoint": Path(checkpoint).name, "checkpoint_step": pipe.step, "version": pipe.version,
                "codec": pipe.codec.spec or pipe.codec.name}

    def work(job: Job, folder: Path, progress: Progress) -> list[Result]:
        chosen = pipelines[job.request.vocoder]
        return render(chosen, job.request, folder, {**recorded, "vocoder": job.request.vocoder}, progress)

    queue = JobQueue(work, workdir, max_waiting=max_waiting)
    handlers = _Handlers(pipe, list(pipelines), queue, workdir, info)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        queue.start()
        try:
            yield
        finally:
            await run_in_threadpool(queue.close)

    app = Starlette(lifespan=lifespan, routes=[
        Route("/", lambda request: _html(pages.index_page(info)), methods=["GET"]),
        Route("/api/jobs", handlers.submit, methods=["POST"]),
        Route("/api/jobs/{job_id}", handlers.status, methods=["GET"]),
        Route("/api/jobs/{job_id}/files/{name}", handlers.file, methods=["GET", "HEAD"]),
        Route("/api/generate", handlers.generate, methods=["POST"]),
        Route("/static/app.css", lambda request: _asset(pages.CSS, "text/css"), methods=["GET"]),
        Route("/static/app.js", lambda request: _asset(pages.JS, "text/javascript"), methods=["GET"]),
    ])
    app.state.queue = queue  # for introspection (tests)
    return app


def _html(body: str) -> HTMLResponse:
    return HTMLResponse(body, headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})


def _asset(text: str, media_type: str) -> Response:
    return Response(text, media_type=media_type, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})


def _refuse(exc: InputError) -> JSONResponse:
    return _json({"error": str(exc)}, exc.status)


class _Handlers:
    """Route handlers sharing the model, the queue and the temporary folder."""

    def __init__(self, pipe: Pipeline, vocoders: list[str], queue: JobQueue, workdir: Path,
                 info: pages.PageInfo) -> None:
        self.pipe, self.vocoders, self.queue, self.workdir, self.info = pipe, vocoders, queue, workdir, info
        self.max_bytes = int(info.max_upload_mb * 1024 * 1024)

    async def _request(self, request: Request) -> GenRequest:
        """Check and decode a multipart generation request; :class:`InputError` says why not."""
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise InputError("cross-site requests are refused", 403)
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            raise InputError("send the request with a Content-Length (a multipart form with a 'file')", 411)
        if int(declared) > self.max_bytes:
            raise InputError(f"the upload is {int(declared) / 2**20:.1f} MB; the limit is "
                             f"{self.info.max_upload_mb:g} MB", 413)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() not in _FORM_TYPES:
            raise InputError("send a multipart/form-data form (curl -F), with a 'file' for v2a and a2v", 415)
        try:
            async with request.form(max_files=1, max_fields=len(FIELDS) + 1, max_part_size=64 * 1024) as form:
                names = [key for key, _ in form.multi_items()]
                twice = sorted({key for key in names if names.count(key) > 1})
                if twice:
                    raise InputError(f"send each field once; given more than once: {', '.join(twice)}")
                fields = {key: value for key, value in form.items() if isinstance(value, str)}
                upload = form.get("file")
                req = parse_fields(fields, self.pipe, self.vocoders, self.info.max_seconds)
                has_file = isinstance(upload, UploadFile) and bool(upload.filename)
                if req.mode == "joint":
                    if has_file:
                        raise InputError("joint mode is unconditional: it takes no file")
                    return req
                if not isinstance(upload, UploadFile) or not has_file:
                    kind = "a video" if req.mode == "v2a" else "an audio or video file"
                    raise InputError(f"mode {req.mode} needs a 'file' ({kind})")
                await self._decode(req, upload)
                return req
        except InputError:
            raise
        except HTTPException as exc:  # Starlette's answer to a malformed or oversized multipart body
            raise InputError(f"the form could not be read ({exc.detail})", 400) from None

    async def _decode(self, req: GenRequest, upload: UploadFile) -> None:
        """Copy the upload into the temporary folder, decode it into ``req``, delete it."""
        name = "".join(c for c in Path(upload.filename or "").name if c.isprintable())[:120] or "upload"
        suffix = Path(name).suffix.lower()
        path = self.workdir / "uploads" / f"{secrets.token_hex(8)}{suffix if _SUFFIX.match(suffix) else ''}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = 0
            with path.open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    size += len(chunk)
                    out.write(chunk)
            if size == 0:
                raise InputError(f"{name}: empty file (0 bytes)")
            await run_in_threadpool(read_upload, req, path, name, self.pipe, self.info.max_seconds)
        finally:
            path.unlink(missing_ok=True)

    async def _queue(self, request: Request) -> Job:
        req = await self._request(request)
        try:
            return self.queue.submit(req)
        except QueueFull as exc:
            raise InputError(str(exc), 503) from None

    async def submit(self, request: Request) -> Response:
        """Queue a job; the page polls its status URL."""
        try:
            job = await self._queue(request)
        except InputError as exc:
            return _refuse(exc)
        return _json({"id": job.id, "status": f"/api/jobs/{job.id}", "position": self.queue.position(job)}, 202)

    def status(self, request: Request) -> Response:
        job = self.queue.get(request.path_params["job_id"])
        if job is None:
            return _json({"error": "no such job (finished jobs are kept for a while only)"}, 404)
        return _json(job.status(self.queue.position(job)))

    def file(self, request: Request) -> Response:
        job = self.queue.get(request.path_params["job_id"])
        name = request.path_params["name"]
        if job is None or job.state != "done" or not _RESULT_FILE.match(name) or not (job.folder / name).is_file():
            return _json({"error": "no such file"}, 404)
        media_type = "video/mp4" if name.endswith(".mp4") else "image/png"
        return FileResponse(job.folder / name, media_type=media_type,
                            headers={**_SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"})

    async def generate(self, request: Request) -> Response:
        """Queue a job, wait for it, answer with its first mp4 (others via the X-Job header's URL)."""
        try:
            job = await self._queue(request)
        except InputError as exc:
            return _refuse(exc)
        while not job.done.is_set():
            await asyncio.sleep(0.1)
        if job.state != "done":
            return _json({"error": job.error}, 500)
        return FileResponse(job.folder / job.results[0].video, media_type="video/mp4",
                            filename=f"cmmd_{job.request.mode}_seed{job.request.settings.seed}.mp4",
                            headers={**_SECURITY_HEADERS, "X-Job": f"/api/jobs/{job.id}"})
