"""Where a dataset lives, as the node reads it: s3, gs, https, hf and kaggle sources listed as
plain objects (a path in the dataset, a size, a version, how to read a byte range of it).

Part of the node-side fetcher: standard library only, so any python3 on a node runs it. The
laptop imports the same code to list a source's size before provisioning.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import ssl
import threading
import urllib.error
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SCHEME = re.compile(r"^(s3|gs|https?|hf|kaggle)://")


class FetchError(Exception):
    """One line that says what failed and what to do; never holds a credential."""


@dataclass(frozen=True)
class RemoteObject:
    path: str  # inside the dataset, POSIX separators
    size: int | None
    version: str  # ETag, generation, revision or Last-Modified: a new one means refetch
    url: str
    headers: Callable[[str, dict[str, str]], dict[str, str]] = field(repr=False, compare=False)
    md5: str | None = None  # hex
    sha256: str | None = None
    unpack: bool = False  # an archive, unpacked into the dataset
    ranges: bool = True  # the server serves byte ranges (else: one read, from the start)


def is_remote(source: str) -> bool:
    return bool(_SCHEME.match(source))


def _no_auth(_url: str, extra: dict[str, str]) -> dict[str, str]:
    return dict(extra)


_CONTEXT: ssl.SSLContext | None = None
_LOCAL = threading.local()  # each thread keeps its own connections open (keep-alive)
_REDIRECTS = 5


def _context() -> ssl.SSLContext:
    # The system's CAs, or SSL_CERT_FILE's (a lab's own CA, a test's throwaway one); made once:
    # loading the CAs costs more than a small object's whole read.
    global _CONTEXT
    if _CONTEXT is None:
        cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("AWS_CA_BUNDLE")
        _CONTEXT = ssl.create_default_context(cafile=cafile or None)
    return _CONTEXT


class Response:
    """A finished request's status line and headers, and its body to read; closing it puts
    the connection back for the thread's next request when the body was read whole."""

    def __init__(self, url: str, answer: http.client.HTTPResponse, key: tuple) -> None:
        self.url, self.answer, self.key = url, answer, key
        self.status, self.headers = answer.status, answer.headers

    def read(self, amount: int | None = None) -> bytes:
        return self.answer.read(amount)

    def geturl(self) -> str:
        return self.url

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and self.answer.length == 0:
            self.answer.read()  # a HEAD's (empty) body: the connection stays usable
        if exc[0] is not None or not self.answer.isclosed():
            _drop(self.key)  # an unread or broken body: that connection is not reused
        self.answer.close()


def _connection(key: tuple) -> http.client.HTTPConnection:
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    found = pool.get(key)
    if found is None:
        scheme, host, port, timeout = key
        if scheme == "https":
            found = http.client.HTTPSConnection(host, port, timeout=timeout, context=_context())
        else:
            found = http.client.HTTPConnection(host, port, timeout=timeout)
        pool[key] = found
    return found


def _drop(key: tuple) -> None:
    found = getattr(_LOCAL, "pool", {}).pop(key, None)
    if found is not None:
        found.close()


def request(
    url: str,
    headers: dict[str, str],
    *,
    method: str = "GET",
    timeout: float = 60,
    body: bytes | None = None,
) -> Response:
    """One request on the thread's kept-alive connection to that host; redirects followed (a
    Hub or Kaggle download answers with one to its CDN); urllib's HTTPError for 4xx and 5xx."""
    for _ in range(_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname or "", port, timeout)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more, fresh
            connection = _connection(key)
            try:
                connection.request(method, target, body=body, headers=headers)
                answer = connection.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                _drop(key)
                if attempt:
                    raise
            except OSError:
                _drop(key)
                raise
        if answer.status in (301, 302, 303, 307, 308) and answer.headers.get("Location"):
            location = urllib.parse.urljoin(url, answer.headers["Location"])
            answer.read()
            if urllib.parse.urlsplit(location).netloc != parts.netloc:
                # Another host (a CDN's signed URL): no credential of ours goes along.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = location
            continue
        response = Response(url, answer, key)
        if answer.status >= 400:
            body = answer.read()
            raise urllib.error.HTTPError(url, answer.status, body[:200].decode(errors="replace"),
                                         answer.headers, None)  # fmt: skip
        return response
    raise FetchError(f"{url.split('?', 1)[0]}: more than {_REDIRECTS} redirects")


def read_json(url: str, headers: dict[str, str], what: str) -> object:
    try:
        with request(url, headers) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{what}: HTTP {exc.code} {_why(exc.code)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{what}: {getattr(exc, 'reason', exc)}") from None


def _why(code: int) -> str:
    return {
        401: "(not signed in: give the credential this source needs)",
        403: "(access denied: check the credential and its permissions)",
        404: "(not found: check the name)",
    }.get(code, "")


# -- S3 and compatible stores (R2, MinIO, Ceph), signed with AWS Signature V4 --------------------
@dataclass(frozen=True)
class AwsKeys:
    access_key: str
    secret_key: str
    token: str | None = None

    @classmethod
    def from_env(cls) -> AwsKeys | None:
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        return cls(key, secret, os.environ.get("AWS_SESSION_TOKEN")) if key and secret else None


def sigv4(
    keys: AwsKeys,
    region: str,
    method: str,
    url: str,
    extra: dict[str, str],
    payload: str = _EMPTY_SHA256,
) -> dict[str, str]:
    """`extra` with AWS Signature V4 headers for an S3 request; `payload`: the body's sha256."""
    parts = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"host": parts.netloc, "x-amz-date": stamp, "x-amz-content-sha256": payload}
    if keys.token:
        headers["x-amz-security-token"] = keys.token
    query = sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in query
    )
    signed = sorted(headers)
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(urllib.parse.unquote(parts.path) or "/", safe="/-_.~"),
            canonical_query,
            "".join(f"{name}:{headers[name]}\n" for name in signed),
            ";".join(signed),
            payload,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + keys.secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={keys.access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    del headers["host"]
    return {**extra, **headers}


def s3_endpoint(endpoint_url: str | None) -> str | None:
    """The spec's endpoint, else the standard variables (R2, MinIO, a test's moto server)."""
    found = (
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    return found.rstrip("/") if found else None


def list_s3(source: str, endpoint_url: str | None = None) -> list[RemoteObject]:
    bucket, _, prefix = source[len("s3://") :].partition("/")
    keys = AwsKeys.from_env()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = s3_endpoint(endpoint_url)
    # Path style at an endpoint: what every S3-compatible store speaks.
    base = f"{endpoint}/{bucket}" if endpoint else f"https://{bucket}.s3.{region}.amazonaws.com"

    def headers(url: str, extra: dict[str, str]) -> dict[str, str]:
        return sigv4(keys, region, "GET", url, extra) if keys else dict(extra)

    def object_url(key: str) -> str:
        return f"{base}/{urllib.parse.quote(key, safe='/-_.~')}"

    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    found = _list_s3_keys(base, folder, headers, source)
    if not found and prefix and not prefix.endswith("/"):
        found = [
            (k, s, e) for k, s, e in _list_s3_keys(base, prefix, headers, source) if k == prefix
        ]
        folder = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    objects = []
    for key, size, etag in found:
        if key.endswith("/"):
            continue  # a console-made "folder" marker
        md5 = etag if re.fullmatch(r"[0-9a-f]{32}", etag) else None  # multipart ETags are not
        objects.append(
            RemoteObject(key[len(folder) :], size, etag, object_url(key), headers, md5=md5)
        )
    return objects


def _list_s3_keys(
    base: str, prefix: str, headers: Callable[[str, dict[str, str]], dict[str, str]], source: str
) -> list[tuple[str, int, str]]:
    found: list[tuple[str, int, str]] = []
    token: str | None = None
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        url = f"{base}/?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
        try:
            with request(url, headers(url, {})) as answer:
                root = ET.fromstring(answer.read())
        except urllib.error.HTTPError as exc:
            hint = _why(exc.code) or "(check the bucket name and its region)"
            raise FetchError(f"{source}: listing failed: HTTP {exc.code} {hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(
                f"{source}: cannot reach the store: {getattr(exc, 'reason', exc)}"
            ) from None
        ns = {"s3": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
        tag = (lambda name: f"s3:{name}") if ns else (lambda name: name)
        for item in root.findall(tag("Contents"), ns):
            key = item.findtext(tag("Key"), "", ns)
            size = int(item.findtext(tag("Size"), "0", ns))
            etag = item.findtext(tag("ETag"), "", ns).strip('"')
            found.append((key, size, etag))
        if root.findtext(tag("IsTruncated"), "false", ns) != "true":
            return found
        token = root.findtext(tag("NextContinuationToken"), None, ns)


# -- Google Cloud Storage, through its JSON API ---------------------------------------------------
def list_gs(source: str) -> list[RemoteObject]:
    bucket, _, prefix = source[len("gs://") :].partition("/")
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    endpoint = host.rstrip("/") if host else "https://storage.googleapis.com"
    token = os.environ.get("GPUJOBS_GCS_TOKEN")
    auth = {"Authorization": f"Bearer {token}"} if token else {}

    def headers(_url: str, extra: dict[str, str]) -> dict[str, str]:
        return {**extra, **auth}

    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    objects, page = [], None
    while True:
        query = {"prefix": folder, "fields": "items(name,size,md5Hash,generation),nextPageToken"}
        if page:
            query["pageToken"] = page
        url = f"{endpoint}/storage/v1/b/{urllib.parse.quote(bucket)}/o?" + urllib.parse.urlencode(
            query
        )
        data = read_json(url, auth, f"{source}: listing")
        assert isinstance(data, dict)
        for item in data.get("items", []):
            name = item["name"]
            if name.endswith("/"):
                continue
            md5 = base64.b64decode(item["md5Hash"]).hex() if item.get("md5Hash") else None
            generation = str(item.get("generation", ""))
            media = (
                f"{endpoint}/storage/v1/b/{urllib.parse.quote(bucket)}/o/"
                f"{urllib.parse.quote(name, safe='')}?alt=media&generation={generation}"
            )
            objects.append(
                RemoteObject(
                    name[len(folder) :], int(item["size"]), generation, media, headers, md5=md5
                )
            )
        page = data.get("nextPageToken")
        if not page:
            return objects


# -- One URL: a file or an archive ----------------------------------------------------------------
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVES)


def list_url(
    url: str,
    sha256: str | None = None,
    auth: dict[str, str] | None = None,
    name: str | None = None,
) -> list[RemoteObject]:
    """One object; its version is what the server says of it (ETag, else Last-Modified and
    length), so a changed file is fetched again and an unchanged one is not."""
    extra = dict(auth or {})

    def headers(_url: str, more: dict[str, str]) -> dict[str, str]:
        return {**more, **extra}

    shown = url.split("?", 1)[0]  # a signed URL's query is a secret
    try:
        with request(url, headers(url, {}), method="HEAD") as answer:
            size_text = answer.headers.get("Content-Length")
            version = answer.headers.get("ETag") or (
                f"{answer.headers.get('Last-Modified', '')}/{size_text}"
            )
            final = answer.geturl()
            ranges = answer.headers.get("Accept-Ranges", "").lower() == "bytes"
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{shown}: HTTP {exc.code} {_why(exc.code)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{shown}: cannot reach it: {getattr(exc, 'reason', exc)}") from None
    base = name or urllib.parse.unquote(urllib.parse.urlsplit(shown).path.rsplit("/", 1)[-1])
    base = base or "download"
    size = int(size_text) if size_text and size_text.isdigit() else None
    return [
        RemoteObject(
            base,
            size,
            (sha256 or "") + version.strip('"'),
            final,
            headers,
            sha256=sha256,
            unpack=is_archive(base),
            ranges=ranges,
        )
    ]


# -- Hugging Face datasets: the Hub's tree API, pinned to one commit -------------------------------
def list_hf(source: str) -> list[RemoteObject]:
    match = re.fullmatch(r"hf://datasets/([\w.-]+/[\w.-]+)(?:@([\w./-]+))?/?", source)
    if not match:
        raise FetchError(f"{source}: expected hf://datasets/ORG/NAME[@revision]")
    repo, revision = match.group(1), match.group(2) or "main"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    token = os.environ.get("HF_TOKEN")
    auth = {"Authorization": f"Bearer {token}"} if token else {}

    def headers(_url: str, extra: dict[str, str]) -> dict[str, str]:
        return {**extra, **auth}

    info = read_json(
        f"{endpoint}/api/datasets/{repo}/revision/{urllib.parse.quote(revision, safe='')}",
        auth,
        f"{source}: revision",
    )
    assert isinstance(info, dict)
    commit = str(info.get("sha") or revision)
    tree = read_json(
        f"{endpoint}/api/datasets/{repo}/tree/{commit}?recursive=true", auth, f"{source}: files"
    )
    objects = []
    for item in tree if isinstance(tree, list) else []:
        if item.get("type") != "file":
            continue
        path = item["path"]
        lfs = item.get("lfs") or {}
        url = f"{endpoint}/datasets/{repo}/resolve/{commit}/{urllib.parse.quote(path)}"
        objects.append(
            RemoteObject(
                path,
                int(item.get("size", 0)),
                commit + ":" + str(item.get("oid")),
                url,
                headers,
                sha256=lfs.get("oid") or lfs.get("sha256"),
            )
        )
    return objects


# -- Kaggle: a dataset or a competition's files, as the zip its API serves ------------------------
def list_kaggle(source: str) -> list[RemoteObject]:
    rest = source[len("kaggle://") :].strip("/")
    endpoint = os.environ.get("KAGGLE_API_ENDPOINT", "https://www.kaggle.com/api/v1").rstrip("/")
    if rest.startswith("competitions/"):
        name = rest.split("/", 1)[1]
        url = f"{endpoint}/competitions/data/download-all/{urllib.parse.quote(name)}"
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", rest):
        url = f"{endpoint}/datasets/download/{rest}"
        name = rest.replace("/", "-")
    else:
        raise FetchError(f"{source}: expected kaggle://OWNER/DATASET or kaggle://competitions/NAME")
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if not (user and key):
        raise FetchError(
            f"{source}: Kaggle needs your API key: ~/.kaggle/kaggle.json or KAGGLE_USERNAME and "
            "KAGGLE_KEY on the machine you launch from"
        )
    basic = base64.b64encode(f"{user}:{key}".encode()).decode()
    return list_url(url, auth={"Authorization": f"Basic {basic}"}, name=f"{name}.zip")


def list_source(
    source: str, *, sha256: str | None = None, endpoint_url: str | None = None
) -> list[RemoteObject]:
    """Every object of one source, or FetchError."""
    if source.startswith("s3://"):
        return list_s3(source, endpoint_url)
    if source.startswith("gs://"):
        return list_gs(source)
    if source.startswith("hf://"):
        return list_hf(source)
    if source.startswith("kaggle://"):
        return list_kaggle(source)
    if source.startswith(("https://", "http://")):
        return list_url(source, sha256)
    raise FetchError(f"{source}: not a source the node can fetch")
