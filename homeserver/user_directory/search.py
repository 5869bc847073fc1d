"""Matching and ranking for the user directory: pure functions, no I/O.

spec: POST /user_directory/search — "performed case-insensitively on user IDs and display names";
results "ordered by rank and then whether or not profile info is available".

A user matches when every word of the search term is the start of a word of their display name
or localpart (after case folding and removing accents), or when the whole term occurs in either,
or starts their user id. Ranks, best first: 0 the term is the whole display name or localpart; 1 every word starts
a display-name word; 2 every word starts a word of the name or id; 3 a plain substring.
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> list[str]:
    return _WORD.findall(normalise(text))


def rank(term: str, user_id: str, display_name: str | None) -> int | None:
    """The rank of a user for `term` (lower is better), or None when they do not match."""
    wanted = words(term)
    if not wanted:
        return None
    localpart = user_id[1:].partition(":")[0]
    name = normalise(display_name or "")
    whole = normalise(term).strip()
    if whole and (whole == name.strip() or whole == normalise(localpart)):
        return 0
    name_words = words(display_name or "")
    if all(any(w.startswith(t) for w in name_words) for t in wanted):
        return 1
    all_words = name_words + words(localpart)
    if all(any(w.startswith(t) for w in all_words) for t in wanted):
        return 2
    # the server name alone matches nobody (it would match everyone); a whole user id does
    if whole and (whole in name or whole in normalise(localpart) or normalise(user_id).startswith(whole)):
        return 3
    return None
