"""Partner URLs: one string names a partner, as `partner connect SRC DST` takes them.

    file:PATH                  a file; source reads it, sink writes it (``?append=1`` appends)
    udp://HOST:PORT            source: bind there and receive; sink: send datagrams there
    tcp://HOST:PORT            connect to a TCP server (either role: a connection is two-way)
    tcp-listen://HOST:PORT     listen there and accept one connection (also tcp://...?listen=1)
    pcap:PATH, pcapng:PATH     source reads either format (told apart by magic number); sink
                               writes the format named by the scheme (``?linktype=N``)

TCP does not pick listen or connect from the role: a client may well download (source) and a
server may well serve (sink), so the URL says which. ``file:`` also takes ``file:///abs/path``;
paths are percent-decoded, so a ``?`` inside a file name is written ``%3F``.

The query string holds the scheme's options (listed per scheme) and the partner's default flow:
``flow=TEMPLATE`` plus any flow attribute (``udp://:9000?src_port=5000``), validated here and used
by `connect` when no other flow is given. Schemes live in a registry, `SCHEMES`, so that other
modules add theirs (``device:``, ``sim:``) with `register_scheme`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote

from ..errors import FlowAttributeError, FlowTemplateError, UrlError
from ..flow import ATTRIBUTES, FlowSpec
from ..partner import Partner

__all__ = ["SCHEMES", "PartnerUrl", "Scheme", "open_partner", "parse_url", "register_scheme"]

ROLES = ("source", "sink")
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST_RE = re.compile(r"[A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\]")


@dataclasses.dataclass(frozen=True)
class PartnerUrl:
    """A URL split into scheme, the part after ``scheme:`` (without query) and query options."""

    text: str
    scheme: str
    rest: str
    query: dict[str, str]

    def option(self, name: str, default=None, kind=str):
        """Query option `name` converted by `kind` (str, int or bool); UrlError names it."""
        if name not in self.query:
            return default
        value = self.query[name]
        if kind is bool:
            if value.lower() in ("", "1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise UrlError(f"URL {self.text!r}: option {name}={value!r} is not a yes/no value "
                           "(use 1 or 0)")
        if kind is int:
            try:
                return int(value, 0)
            except ValueError:
                raise UrlError(f"URL {self.text!r}: option {name}={value!r} is not an "
                               "integer") from None
        return value

    def path(self) -> str:
        """The path of a path-like URL: ``file:x``, ``file:/x``, ``file:///x``."""
        rest = self.rest
        if rest.startswith("//"):
            host, slash, tail = rest[2:].partition("/")
            if host not in ("", "localhost"):
                raise UrlError(f"URL {self.text!r}: host {host!r} is not supported; "
                               f"{self.scheme}: URLs name local files ({self.scheme}:///abs/path "
                               f"or {self.scheme}:relative/path)")
            rest = slash + tail
        if not rest:
            raise UrlError(f"URL {self.text!r} has no path (expected {self.scheme}:PATH)")
        return unquote(rest)

    def host_port(self, *, need_host: bool) -> tuple[str, int]:
        """(host, port) of ``scheme://HOST:PORT``; an empty host is allowed unless `need_host`."""
        example = f"{self.scheme}://HOST:PORT"
        if not self.rest.startswith("//"):
            raise UrlError(f"URL {self.text!r}: expected {example} (missing '//')")
        netloc, slash, path = self.rest[2:].partition("/")
        if path or slash:
            raise UrlError(f"URL {self.text!r}: unexpected path {slash + path!r} after "
                           f"HOST:PORT ({example})")
        host, colon, port = netloc.rpartition(":")
        if not colon:
            raise UrlError(f"URL {self.text!r}: missing port in {netloc!r} (expected {example})")
        if not _HOST_RE.fullmatch(host):
            raise UrlError(f"URL {self.text!r}: malformed host {host!r}")
        if need_host and not host:
            raise UrlError(f"URL {self.text!r}: missing host (expected {example})")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UrlError(f"URL {self.text!r}: malformed port {port!r} (expected 0..65535)")
        if need_host and int(port) == 0:
            raise UrlError(f"URL {self.text!r}: port 0 cannot be a destination")
        return host.strip("[]"), int(port)


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A URL scheme: how to build its partner for a role, its syntax and its query options."""

    name: str
    factory: Callable[[PartnerUrl, str], Partner]
    syntax: str
    help: str
    options: tuple[str, ...] = ()


#: Every known scheme by name; add to it with `register_scheme`.
SCHEMES: dict[str, Scheme] = {}


def register_scheme(name: str, factory: Callable[[PartnerUrl, str], Partner], *, syntax: str,
                    help: str, options: tuple[str, ...] = ()) -> Scheme:
    """Make `open_partner` understand ``name:...``: `factory(url, role)` builds the partner."""
    if not _SCHEME_RE.fullmatch(name):
        raise ValueError(f"scheme name {name!r} must be lower-case letters, digits, '+', '-', '.'")
    if name in SCHEMES:
        raise ValueError(f"URL scheme {name!r} is registered already")
    scheme = SCHEMES[name] = Scheme(name, factory, syntax, help, tuple(options))
    return scheme


def _known() -> str:
    return ", ".join(sorted(SCHEMES))


def parse_url(text: str) -> PartnerUrl:
    """Split a partner URL; `UrlError` if it has no scheme or an unknown one."""
    if not isinstance(text, str) or not text.strip():
        raise UrlError(f"empty partner URL {text!r}; known schemes: {_known()}")
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise UrlError(f"partner URL {text!r} has no scheme (e.g. file:{text}); "
                       f"known schemes: {_known()}")
    if scheme not in SCHEMES:
        raise UrlError(f"unknown scheme {scheme!r} in URL {text!r}; known schemes: {_known()}")
    rest, _, query = rest.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise UrlError(f"URL {text!r}: malformed query {query!r} (expected name=value&...)") \
            from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise UrlError(f"URL {text!r}: query option {key!r} given twice")
        options[key] = value
    return PartnerUrl(text, scheme, rest, options)


def open_partner(url: str, *, role: str = "source") -> Partner:
    """The partner a URL names, made for `role` (``"source"`` gives data, ``"sink"`` takes it).

    Its `default_template` becomes the flow the URL's query describes, if it describes one.
    """
    if role not in ROLES:
        raise UrlError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    parsed = parse_url(url)
    scheme = SCHEMES[parsed.scheme]
    flow_keys = {"flow", *ATTRIBUTES}
    unknown = [k for k in parsed.query if k not in scheme.options and k not in flow_keys]
    if unknown:
        options = ", ".join(scheme.options) or "none"
        raise UrlError(f"URL {parsed.text!r}: unknown query option {unknown[0]!r}; {scheme.name}: "
                       f"options are {options}, plus flow=TEMPLATE and flow attributes")
    flow_attrs = [(k, v) for k, v in parsed.query.items() if k in ATTRIBUTES]
    partner = scheme.factory(parsed, role)
    if "flow" in parsed.query or flow_attrs:
        template = parsed.query.get("flow") or partner.default_template
        try:
            spec = FlowSpec.parse(template, flow_attrs)
        except (FlowTemplateError, FlowAttributeError) as error:
            partner.shutdown()
            raise UrlError(f"URL {parsed.text!r}: {error}") from None
        partner.default_template = str(spec)
    return partner


# --- the built-in schemes -------------------------------------------------------------------


def _file(url: PartnerUrl, role: str) -> Partner:
    from .file import FilePartner

    mode = "r" if role == "source" else ("a" if url.option("append", False, bool) else "w")
    return FilePartner(url.path(), mode, chunk_size=url.option("chunk", 65536, int))


def _udp(url: PartnerUrl, role: str) -> Partner:
    from .sockets import UdpPartner

    address = url.host_port(need_host=role == "sink")
    return UdpPartner(local=address) if role == "source" else UdpPartner(remote=address)


def _tcp(url: PartnerUrl, role: str) -> Partner:
    from .sockets import TcpPartner

    listen = url.scheme == "tcp-listen" or url.option("listen", False, bool)
    timeout = url.option("timeout", None, int)
    address = url.host_port(need_host=not listen)
    if listen:
        return TcpPartner(address, listen=True, accept_timeout=timeout)
    return TcpPartner(address, connect_timeout=timeout or 10)


def _capture(url: PartnerUrl, role: str) -> Partner:
    from .pcap import PcapReader, PcapWriter

    if role == "source":
        return PcapReader(url.path())
    return PcapWriter(url.path(), url.scheme, url.option("linktype", 1, int),
                      snaplen=url.option("snaplen", 262144, int),
                      nanosecond=url.option("ns", False, bool))


register_scheme("file", _file, syntax="file:PATH", options=("append", "chunk"),
                help="a file: read as a source, written (or appended with append=1) as a sink")
register_scheme("udp", _udp, syntax="udp://HOST:PORT",
                help="UDP: a source binds HOST:PORT and receives, a sink sends there")
register_scheme("tcp", _tcp, syntax="tcp://HOST:PORT", options=("listen", "timeout"),
                help="a TCP connection to HOST:PORT (listen=1: accept one there instead)")
register_scheme("tcp-listen", _tcp, syntax="tcp-listen://HOST:PORT", options=("timeout",),
                help="a TCP connection accepted on HOST:PORT")
for _format in ("pcap", "pcapng"):
    register_scheme(_format, _capture, syntax=f"{_format}:PATH",
                    options=("linktype", "snaplen", "ns"),
                    help=f"a capture file: a source reads pcap or pcapng, a sink writes {_format}")
