"""Request routing by path segments: one aiohttp resource resolves every path by walking a trie.

aiohttp's own router tries the routes that share a path prefix one regular expression at a time,
and every `/rooms/{roomId}/...` route shares one prefix. Here a path is split at `/` once and each
segment is a dict lookup, so resolving costs the path's depth whatever the number of routes, and
adding a route compiles nothing.

Templates use three segment forms: a literal, `{name}` (one non-empty segment) and, last only,
`{name:.+}` (the rest of the path, slashes included). Matching follows aiohttp's: the path is
`request.rel_url.path_safe` (`%2F` and `%25` still encoded), `{name}` takes no `{` or `}`,
`{name:.+}` no newline, and each value is then decoded of `%2F` and `%25`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo
from yarl import URL

if TYPE_CHECKING:
    from aiohttp.web_urldispatcher import _InfoDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Whether a route admits guest accounts: a flag, or a test of the request (one path variable, say)
GuestRule = bool | Callable[[web.Request], bool]
T = TypeVar("T")

TAIL_SUFFIX = ":.+"
NO_METHODS: frozenset[str] = frozenset()


def decode_value(raw: str) -> str:
    """A matched value as aiohttp gives it: `path_safe` keeps `%2F` and `%25`, decoded here."""
    if "%" not in raw:
        return raw
    # `%2F` first: a `%25` that turns into `%` must not then start a `%2F`
    return raw.replace("%2F", "/").replace("%25", "%")


class _Node(Generic[T]):
    """One segment position. Children are tried literal first, then `{name}`, then `{name:.+}`."""

    __slots__ = ("endpoints", "literal", "param", "tail")

    def __init__(self) -> None:
        self.literal: dict[str, _Node[T]] = {}
        self.param: _Node[T] | None = None
        self.tail: _Node[T] | None = None
        # method -> (value, the template's variable names in path order)
        self.endpoints: dict[str, tuple[T, tuple[str, ...]]] = {}


class PathTrie(Generic[T]):
    """Path templates by segment, each with a value per method."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        # templates without variables by their whole path: one lookup for `/sync` and the like
        self._literal: dict[str, _Node[T]] = {}

    def add(self, method: str, template: str, value: T) -> bool:
        """Add `value` for `method` on `template`; False (and nothing added) if that pair is taken."""
        if not template.startswith("/"):
            raise ValueError(f"path template must start with '/': {template!r}")
        node = self._root
        names: list[str] = []
        segments = template.split("/")
        last = len(segments) - 1
        for i, segment in enumerate(segments):
            if not segment.startswith("{"):
                if "{" in segment or "}" in segment:
                    raise ValueError(f"unsupported segment {segment!r} in {template!r}")
                child = node.literal.get(segment)
                if child is None:
                    child = node.literal[segment] = _Node()
                node = child
                continue
            if not segment.endswith("}"):
                raise ValueError(f"unsupported segment {segment!r} in {template!r}")
            name = segment[1:-1]
            if name.endswith(TAIL_SUFFIX):
                name = name[: -len(TAIL_SUFFIX)]
                if i != last:
                    raise ValueError(f"{{{name}{TAIL_SUFFIX}}} must be the last segment of {template!r}")
                if node.tail is None:
                    node.tail = _Node()
                node = node.tail
            else:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            if not name.isidentifier():
                raise ValueError(f"unsupported variable {segment!r} in {template!r}")
            names.append(name)
        if method in node.endpoints:
            return False
        if not names:
            self._literal[template] = node
        node.endpoints[method] = (value, tuple(names))
        return True

    def lookup(self, method: str, path: str) -> tuple[T | None, dict[str, str], Collection[str]]:
        """`(value, variables, allowed)`; on no match the value is None and `allowed` names the
        methods the path has (empty: no template matches it)."""
        literal = self._literal.get(path)
        if literal is not None:
            # a literal match is always the first candidate in search order
            found = literal.endpoints.get(method)
            if found is not None:
                return found[0], {}, NO_METHODS
        parts = path.split("/")
        # Fast path: follow the first candidate in search order. Paths with characters that some
        # variable forms refuse, and paths whose first candidate fails, take the full search.
        if "{" not in path and "}" not in path and "\n" not in path:
            node = self._root
            values: list[str] = []
            for i, segment in enumerate(parts):
                child = node.literal.get(segment)
                if child is not None:
                    node = child
                elif segment and node.param is not None:
                    node = node.param
                    values.append(segment)
                elif node.tail is not None and (rest := "/".join(parts[i:])):
                    node = node.tail
                    values.append(rest)
                    break
                else:
                    return self._search(method, parts)
            found = node.endpoints.get(method)
            if found is not None:
                return found[0], _variables(found[1], values, "%" in path), NO_METHODS
        return self._search(method, parts)

    def _search(self, method: str, parts: list[str]) -> tuple[T | None, dict[str, str], Collection[str]]:
        allowed: set[str] = set()
        for node, values in self._matches(self._root, parts, 0, []):
            found = node.endpoints.get(method)
            if found is not None:
                return found[0], _variables(found[1], values, True), NO_METHODS
            allowed.update(node.endpoints)
        return None, {}, allowed

    def _matches(
        self, node: _Node[T], parts: list[str], i: int, values: list[str]
    ) -> Iterator[tuple[_Node[T], list[str]]]:
        """Every node with endpoints that matches `parts[i:]` from `node`, in search order."""
        if i == len(parts):
            if node.endpoints:
                yield node, values
            return
        segment = parts[i]
        child = node.literal.get(segment)
        if child is not None:
            yield from self._matches(child, parts, i + 1, values)
        if node.param is not None and segment and "{" not in segment and "}" not in segment:
            yield from self._matches(node.param, parts, i + 1, [*values, segment])
        if node.tail is not None and node.tail.endpoints:
            rest = "/".join(parts[i:])
            if rest and "\n" not in rest:
                yield node.tail, [*values, rest]


def _variables(names: tuple[str, ...], values: list[str], encoded: bool) -> dict[str, str]:
    if not names:
        return {}
    if encoded:
        values = [decode_value(v) for v in values]
    # no `strict=True`: a node's names and the values met on the way to it are as many (and the
    # keyword costs more than the rest of this call)
    return dict(zip(names, values))  # noqa: B905


class PathRoute(AbstractRoute):
    """One method on one path template: what `request.match_info.route` is."""

    def __init__(
        self, method: str, path: str, handler: Handler, resource: web.AbstractResource, guests: GuestRule = False
    ) -> None:
        super().__init__(method, handler, resource=resource)
        self.path = path
        self.guests = guests

    def admits_guest(self, request: web.Request) -> bool:
        return self.guests(request) if callable(self.guests) else self.guests

    @property
    def name(self) -> str | None:
        return None

    def get_info(self) -> _InfoDict:
        return {"formatter": self.path}

    def url_for(self, *args: str, **kwargs: str) -> URL:
        segments = []
        for segment in self.path.split("/"):
            if segment.startswith("{"):
                name = segment[1:-1]
                tail = name.endswith(TAIL_SUFFIX)
                value = kwargs[name.removesuffix(TAIL_SUFFIX)]
                segment = quote(value, safe="/!$&'()*+,;=:@" if tail else "!$&'()*+,;=:@")
            segments.append(segment)
        return URL.build(path="/".join(segments), encoded=True)

    def __repr__(self) -> str:
        return f"<PathRoute {self.method} {self.path}>"


class TrieResource(web.AbstractResource):
    """Every route of an app as one aiohttp resource, answering every path, 404 and 405 included.

    Its canonical path is `/`, so aiohttp's router reaches it for any path, after any resource
    registered with a longer static prefix. OPTIONS goes to `preflight` (when given) on any path.
    """

    def __init__(
        self,
        *,
        not_found: Handler,
        not_allowed: Callable[[Collection[str]], Handler],
        preflight: Handler | None = None,
    ) -> None:
        super().__init__()
        self._trie: PathTrie[PathRoute] = PathTrie()
        self._routes: list[PathRoute] = []
        self._not_found = PathRoute(hdrs.METH_ANY, "/", not_found, self)
        self._not_allowed = not_allowed
        self._refusals: dict[frozenset[str], PathRoute] = {}
        self._preflight = None if preflight is None else PathRoute(hdrs.METH_OPTIONS, "/", preflight, self)
        self._resolved: set[str] = set()  # aiohttp reads allowed methods only when nothing matched

    def add_route(self, method: str, path: str, handler: Handler, guests: GuestRule = False) -> PathRoute | None:
        """Add a route; None (and nothing added) if `method` on `path` is taken: the first one stays."""
        route = PathRoute(method, path, handler, self, guests)
        if not self._trie.add(route.method, path, route):
            return None
        self._routes.append(route)
        return route

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        method = request.method
        if method == hdrs.METH_OPTIONS and self._preflight is not None:
            return UrlMappingMatchInfo({}, self._preflight), self._resolved
        route, variables, allowed = self._trie.lookup(method, request.rel_url.path_safe)
        if route is None:
            route = self._refusal(frozenset(allowed)) if allowed else self._not_found
        return UrlMappingMatchInfo(variables, route), self._resolved

    def _refusal(self, allowed: frozenset[str]) -> PathRoute:
        route = self._refusals.get(allowed)
        if route is None:
            route = PathRoute(hdrs.METH_ANY, "/", self._not_allowed(allowed), self)
            self._refusals[allowed] = route
        return route

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        return URL.build(path="/")

    def raw_match(self, path: str) -> bool:
        return False  # aiohttp must not add routes of its own to this resource

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("a TrieResource answers every path and cannot move under a prefix")

    def get_info(self) -> _InfoDict:
        return {"prefix": "/"}

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[AbstractRoute]:
        return iter(self._routes)
