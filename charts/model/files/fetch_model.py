"""Download a model artifact for the arbiter-model init container.

Usage: python3 fetch_model.py URL DEST [SHA256] [TIMEOUT_S]

Writes to DEST.part and renames it to DEST only when the download is complete
(and, if SHA256 is given, matches), so the server never loads a partial file.
Standard library only, so any image with python3 can run it.
"""

import hashlib
import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    url, dest = argv[1], argv[2]
    expected = argv[3].strip().lower() if len(argv) > 3 else ""
    timeout_s = float(argv[4]) if len(argv) > 4 else 300.0
    part = dest + ".part"
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if expected and digest.hexdigest() != expected:
        os.remove(part)
        print(
            f"sha256 mismatch for {url}: got {digest.hexdigest()}, want {expected}", file=sys.stderr
        )
        return 1
    os.replace(part, dest)
    size = os.path.getsize(dest)
    print(f"fetched {url} -> {dest} ({size} bytes, sha256 {digest.hexdigest()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
