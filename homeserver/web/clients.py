"""The Matrix apps the invite page suggests, per platform, with their store links (the apps'
own published links), and the deep links that open an app on this server."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Store:
    name: str
    url: str


@dataclass(frozen=True)
class App:
    name: str
    about: str
    homepage: str
    stores: dict[str, tuple[Store, ...]]  # platform -> where to get it


_PLAY = "Google Play"
_FDROID = "F-Droid"
_APPSTORE = "App Store"
_FLATHUB = "Flathub"

APPS: tuple[App, ...] = (
    App(
        "Element X",
        "Fast and simple, from the makers of Matrix' most used app.",
        "https://element.io/app",
        {
            "android": (
                Store(_PLAY, "https://play.google.com/store/apps/details?id=io.element.android.x"),
                Store(_FDROID, "https://f-droid.org/packages/io.element.android.x/"),
            ),
            "ios": (Store(_APPSTORE, "https://apps.apple.com/app/element-x-secure-chat-call/id1631335820"),),
        },
    ),
    App(
        "Element",
        "Full-featured, on every platform.",
        "https://element.io/download",
        {
            "android": (Store(_PLAY, "https://play.google.com/store/apps/details?id=im.vector.app"),),
            "ios": (Store(_APPSTORE, "https://apps.apple.com/app/vector/id1083446067"),),
            "desktop": (Store("element.io", "https://element.io/download"),),
            "web": (Store("app.element.io", "https://app.element.io/"),),
        },
    ),
    App(
        "FluffyChat",
        "Friendly and colourful.",
        "https://fluffychat.im/",
        {
            "android": (
                Store(_PLAY, "https://play.google.com/store/apps/details?id=chat.fluffy.fluffychat"),
                Store(_FDROID, "https://f-droid.org/packages/chat.fluffy.fluffychat/"),
            ),
            "ios": (Store(_APPSTORE, "https://apps.apple.com/app/fluffychat/id1551469600"),),
            "desktop": (Store(_FLATHUB, "https://flathub.org/apps/im.fluffychat.Fluffychat"),),
            "web": (Store("fluffychat.im", "https://fluffychat.im/web/"),),
        },
    ),
    App(
        "Cinny",
        "A clean app for the computer.",
        "https://cinny.in/",
        {
            "desktop": (Store(_FLATHUB, "https://flathub.org/apps/in.cinny.Cinny"),),
            "web": (Store("app.cinny.in", "https://app.cinny.in/"),),
        },
    ),
)


def platform_of(user_agent: str | None) -> str:
    """android, ios or desktop, from the User-Agent (a hint for ordering only: every app is listed)."""
    ua = (user_agent or "").lower()
    if "android" in ua:
        return "android"
    if any(k in ua for k in ("iphone", "ipad", "ipod")):
        return "ios"
    return "desktop"


def suggestions(platform: str) -> tuple[list[tuple[App, tuple[Store, ...]]], list[tuple[App, tuple[Store, ...]]]]:
    """(apps for `platform`, the others with all their stores); desktop users also get web apps."""
    mine: list[tuple[App, tuple[Store, ...]]] = []
    rest: list[tuple[App, tuple[Store, ...]]] = []
    for app in APPS:
        stores = app.stores.get(platform, ())
        if platform == "desktop":
            stores = stores + app.stores.get("web", ())
        if stores:
            mine.append((app, stores))
        else:
            rest.append((app, tuple(s for v in app.stores.values() for s in v)))
    return mine, rest


def deep_links(base_url: str, server_name: str) -> list[tuple[str, str]]:
    """(label, URL) links that open an app pointed at this server."""
    return [
        ("Element X", f"https://mobile.element.io/?account_provider={quote(server_name, safe='')}"),
        ("Element Web", f"https://app.element.io/#/login?hs_url={quote(base_url, safe='')}"),
        ("Cinny", f"https://app.cinny.in/login/{quote(server_name, safe='')}"),
    ]


def register_links(server_name: str, token: str) -> list[tuple[str, str]]:
    """Links that open an app's own sign-up on this server with the invite's token filled in."""
    return [("Cinny", f"https://app.cinny.in/register/{quote(server_name, safe='')}?token={quote(token, safe='')}")]
