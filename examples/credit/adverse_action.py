"""Write an adverse-action letter for a refused applicant from the gateway's explanation.

A lender that refuses credit owes the applicant the principal reasons. The gateway
explains every refusal (``explain.when: refusals``) and serves the explanation at
``GET /v2/decisions/{id}/explanation`` (scope ``decisions:read``): 200 with the document
once done, 202 while it is still owed. This script asks for it (waiting while 202),
and writes a plain-text letter that names the decision and its reasons, one sentence
each, from the document's ``reasons`` (at most four, largest contribution first).

Usage::

    python -m examples.credit.adverse_action --gateway http://127.0.0.1:8000 \\
        --decision 9f0c... [--token $TOKEN] [--lender "Example Bank"] [--out letter.txt]

The token may also come from the environment variable ``ARBITER_TOKEN``. Exit status: 0
letter written; 1 the gateway failed or the explanation is still owed after ``--wait-s``;
2 the decision is not a refusal, or its explanation failed or gives no reason. The
wording is a sample to adapt with counsel; it is not legal advice.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["LetterError", "fetch_explanation", "letter", "main"]

TOKEN_ENV = "ARBITER_TOKEN"
MAX_REASONS = 4


class LetterError(Exception):
    """No letter can be written; ``status`` is the exit status (1 or 2)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _get(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"error": body.decode(errors="replace")}


def fetch_explanation(gateway: str, decision_id: str, token: str | None = None,
                      wait_s: float = 60.0) -> dict[str, Any]:
    """The decision's final explanation document, waiting while the gateway answers 202.

    Raises:
        LetterError: the gateway answered an error (status 1), or the explanation was
            still owed after ``wait_s`` seconds (status 1).
    """
    url = f"{gateway.rstrip('/')}/v2/decisions/{decision_id}/explanation"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status, doc = _get(url, token)
        except OSError as exc:
            raise LetterError(f"gateway {gateway} unreachable: {exc}", 1) from None
        if status == 200:
            return doc
        if status != 202:
            raise LetterError(f"gateway answered {status}: {doc.get('error', doc)}", 1)
        if time.monotonic() >= deadline:
            raise LetterError(f"the explanation of {decision_id} is still owed after "
                              f"{wait_s:g} s; try again later", 1)
        time.sleep(1.0)


def principal_reasons(document: dict[str, Any]) -> list[str]:
    """Up to four reason sentences of a refusal's explanation document.

    Raises:
        LetterError: the decision was not adverse, its explanation failed, or it gives
            no reason (status 2).
    """
    if document.get("status") != "done":
        raise LetterError(f"the explanation {document.get('status')}: "
                          f"{document.get('reason') or 'no reason given'}", 2)
    if document.get("kind") not in (None, "adverse"):
        raise LetterError("the decision was not a refusal: no adverse-action letter is "
                          "owed", 2)
    rows = document.get("rows") or [document]
    sentences = [r["sentence"] for row in rows for r in row.get("reasons") or []]
    if not sentences:
        raise LetterError("the explanation names no reason for the refusal", 2)
    return sentences[:MAX_REASONS]


def letter(document: dict[str, Any], lender: str = "Example Bank",
           contact: str = "our customer service team") -> str:
    """The letter's text for a refusal's explanation document (see :func:`principal_reasons`).

    Raises:
        LetterError: as :func:`principal_reasons`.
    """
    reasons = principal_reasons(document)
    decided = document.get("decided_at")
    when = (datetime.datetime.fromtimestamp(decided, datetime.UTC).date().isoformat()
            if decided else "recently")
    body = [
        lender,
        datetime.date.today().isoformat(),
        "",
        "Dear applicant,",
        "",
        *textwrap.wrap(
            f"Thank you for applying for credit with {lender}. We have reviewed your "
            f"application (reference {document['decision_id']}, decided {when}) and we "
            "are unable to approve it.", 78),
        "",
        "The principal reasons for our decision are:",
        "",
        *[line for i, sentence in enumerate(reasons, 1)
          for line in textwrap.wrap(f"{i}. {_sentence(sentence)}", 78,
                                    subsequent_indent="   ")],
        "",
        *textwrap.wrap(
            "These reasons come from the information in your application. If any of it "
            f"is wrong or has changed, please tell {contact}: you may ask us to look at "
            "your application again, and you may ask for a copy of the information we "
            "used.", 78),
        "",
        "Yours sincerely,",
        lender,
        "",
    ]
    return "\n".join(body)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="gateway URL, http://host:port")
    parser.add_argument("--decision", required=True, help="the refused decision's id")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token with decisions:read (default: ${TOKEN_ENV})")
    parser.add_argument("--lender", default="Example Bank", help="name that signs the letter")
    parser.add_argument("--contact", default="our customer service team",
                        help="whom the applicant should contact")
    parser.add_argument("--wait-s", type=float, default=60.0,
                        help="seconds to wait while the explanation is owed (default 60)")
    parser.add_argument("--out", type=Path, help="file for the letter (default: stdout)")
    args = parser.parse_args(argv)
    try:
        document = fetch_explanation(args.gateway, args.decision, args.token, args.wait_s)
        text = letter(document, args.lender, args.contact)
    except LetterError as exc:
        print(f"adverse_action: {exc}", file=sys.stderr)
        return exc.status
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
