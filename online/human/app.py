"""The rating page's web application (starlette): four fixed routes behind a token check.

Routes (each needs ``?token=<token>``, or the ``X-Rating-Token`` header):

* ``GET /``: the page (``page.html``, one file with its style and script);
* ``GET /api/state``: the round, what is left to rate, and the run's reward curve (JSON);
* ``GET /image/{index}``: the PNG of one item of the current round, from memory;
* ``POST /api/rate``: ``{"index": i, "rating": 1..10}`` or ``{"index": i, "skip": true}``;
  answered only once the loop has written the answer to the round's journal.

Nothing a request carries is used as a path: the index is an integer looked up among the
round's items, and the page is read once from this package.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
TOKEN_HEADER = "x-rating-token"
MAX_BODY_BYTES = 4096
SAVE_WAIT_S = 120.0  # how long a rating request waits for the loop to journal it
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never hand it to another site
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
FORBIDDEN = "Forbidden: open the page with the link printed on the loop's terminal (it carries the token).\n"


class TokenRequired:
    """ASGI middleware: every HTTP request must carry the token; anything else gets 403."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            request = Request(scope)
            given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER) or ""
            if not secrets.compare_digest(given.encode("utf-8"), self.token):
                response = PlainTextResponse(FORBIDDEN, status_code=403, headers=SECURITY_HEADERS)
                await response(scope, receive, send)
                return
        elif scope["type"] != "lifespan":  # websockets: not served
            return
        await self.app(scope, receive, send)


def build_app(board, token: str) -> Starlette:
    """The application serving `board` (the current round's items, an :class:`online.human.oracle.RatingBoard`,
    which imports this module) behind `token`."""

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers=SECURITY_HEADERS)

    async def state(request: Request) -> Response:
        return JSONResponse(board.snapshot(), headers=SECURITY_HEADERS)

    async def image(request: Request) -> Response:
        png = board.image(request.path_params["index"])
        if png is None:
            return _error(404, "no such image in this round")
        return Response(png, media_type="image/png", headers=SECURITY_HEADERS)

    async def rate(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return _error(413, "request too large")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be JSON")
        parsed = parse_rating(body, board.scale)
        if isinstance(parsed, str):
            return _error(400, parsed)
        index, rating = parsed
        ticket = board.claim(index, rating)
        if ticket is None:
            return _error(409, "this image is already rated, or not part of the current round")
        saved = await run_in_threadpool(ticket.done.wait, SAVE_WAIT_S)
        if not saved or ticket.error is not None:
            board.release(ticket)
            why = "the loop did not answer in time" if not saved else ticket.error
            return _error(503, f"the rating was not saved ({why}); try again")
        return JSONResponse({"saved": True, "left": board.left()}, headers=SECURITY_HEADERS)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/image/{index:int}", image, methods=["GET"]),
        Route("/api/rate", rate, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(TokenRequired, token=token)])


def parse_rating(body, scale: tuple[int, int]) -> tuple[int, int | None] | str:
    """``(index, rating)`` from a request body (rating None: skipped), or why it is refused."""
    low, high = scale
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    index = body.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        return "index must be an integer"
    if body.get("skip") is True:
        return index, None
    rating = body.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, int) or not low <= rating <= high:
        return f"rating must be an integer from {low} to {high}, or skip must be true"
    return index, rating


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)
