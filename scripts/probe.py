"""Exit 0 once the emulator at URL answers HTTP.

moto: GET /moto-api/data.json (an unsigned GET / is answered as S3). dynalite: any HTTP answer to GET /
(it answers unsigned requests with a 4xx error document).

Usage: probe.py moto|dynalite URL
"""

import sys
import urllib.error
import urllib.request

kind, url = sys.argv[1], sys.argv[2]
path = "/moto-api/data.json" if kind == "moto" else "/"
try:
    urllib.request.urlopen(url + path, timeout=2)
except urllib.error.HTTPError:
    if kind == "moto":
        sys.exit(1)
sys.exit(0)
