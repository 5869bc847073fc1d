"""State resolution: our resolver against Synapse's, on the same forked DAGs, in one process.

    bash bench/setup.sh && bench/.venv/bin/python bench/state_res.py [--sizes 1000,10000,50000] [--seeds 1-5]
    bench/.venv/bin/python bench/state_res.py --vectors tests/vectors/state_res_synapse.json

For each size a deterministic room DAG is generated (`dag_gen.py`); Synapse's resolver decides
the state at each merge while the DAG is built, and every event is checked against Synapse's auth
rules (and ours) on the way. Then, at every merge point, both resolvers get the same state sets:
the answers must be equal (any difference is printed and the exit status is 1), and each is timed
(median of --runs, wall and CPU) after one untimed warm-up run.

Synapse runs on an in-memory store whose auth-chain-difference answers are cached after the
warm-up, so its times leave out that query (Synapse answers it from its chain-cover index); ours
include computing auth chains from the event map. The comparison therefore leans Synapse's way.

`--vectors PATH` writes small rooms with Synapse's resolution of every merge instead, for the test
suite (tests/unit/test_state_res_synapse_vectors.py), so that it checks agreement without Synapse.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dag_gen import Dag, GenConfig, MergePoint, StateKey, StateMap, generate
from synapse_ref import SynapseRoom, auth_chain_difference, conflicted_subgraph, synapse_supports

from homeserver.state import resolve_state

Resolve = Callable[[Sequence[Mapping[StateKey, str]]], Mapping[StateKey, str]]


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


@dataclass
class Row:
    size: int
    room_version: str
    seed: int
    merge: str
    state_sets: int
    state_keys: int
    conflicted: int  # event ids in the conflicted state set
    full_conflicted: int  # plus the auth difference (and, in v2.1, the conflicted subgraph)
    ours: Timing
    synapse: Timing
    match: bool
    mismatched_keys: int

    @property
    def ratio(self) -> float:
        """Synapse's median wall time over ours: above 1 means we are faster."""
        return _ratio(self.synapse.wall_median, self.ours.wall_median)

    @property
    def cpu_ratio(self) -> float:
        """The same for CPU time, steadier than wall time on a busy machine."""
        return _ratio(self.synapse.cpu_median, self.ours.cpu_median)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        for side in ("ours", "synapse"):
            t: Timing = getattr(self, side)
            d[side] = {"wall_s": t.wall_median, "cpu_s": t.cpu_median, "wall_runs": t.wall, "cpu_runs": t.cpu}
        d["ratio_synapse_over_ours"] = self.ratio
        d["cpu_ratio_synapse_over_ours"] = self.cpu_ratio
        return d


def _ratio(theirs: float, ours: float) -> float:
    return theirs / ours if ours else float("inf")


def conflict_stats(m: MergePoint, room: SynapseRoom) -> tuple[int, int, int]:
    keys: set[StateKey] = set().union(*m.state_sets)
    conflicted = {s[k] for k in keys if len({s.get(k) for s in m.state_sets}) > 1 for s in m.state_sets if k in s}
    full = conflicted | auth_chain_difference([set(s.values()) for s in m.state_sets], room.store.auth_of)
    if room.is_v21:
        full |= conflicted_subgraph(conflicted, room.store.auth_of)
    return len(keys), len(conflicted), len(full)


def timed(fn: Resolve, state_sets: list[StateMap], timing: Timing) -> Mapping[StateKey, str]:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn(state_sets)
    timing.cpu.append(time.process_time() - c0)
    timing.wall.append(time.perf_counter() - w0)
    return result


def describe(events: Mapping[str, Mapping[str, Any]], eid: str | None) -> str:
    if eid is None:
        return "(absent)"
    ev = events[eid]
    return f"{eid} {ev['type']} sender={ev['sender']} ts={ev['origin_server_ts']} content={json.dumps(ev['content'])}"


def report_mismatch(dag: Dag, m: MergePoint, ours: Mapping[StateKey, str], theirs: Mapping[StateKey, str]) -> int:
    bad = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    print(
        f"\n!!! MISMATCH: size {dag.config.n_events}, room v{dag.room_version}, {m.label}: "
        f"{len(bad)} state keys differ",
        file=sys.stderr,
    )
    for k in bad[:10]:
        print(
            f"  {k}\n    ours:    {describe(dag.events, ours.get(k))}\n"
            f"    Synapse: {describe(dag.events, theirs.get(k))}",
            file=sys.stderr,
        )
    if len(bad) > 10:
        print(f"  ... and {len(bad) - 10} more", file=sys.stderr)
    return len(bad)


class OursAuthCheck:
    """Check each generated event with our own auth rules too (beside Synapse's)."""

    def __init__(self, room_version: str, events: Mapping[str, Mapping[str, Any]]) -> None:
        from homeserver.protocol.auth_rules import check_auth

        self.check_auth = check_auth
        self.room_version = room_version
        self.events = events
        self.create: Mapping[str, Any] | None = None
        self.failures: list[str] = []

    def __call__(self, eid: str, pdu: Mapping[str, Any]) -> None:
        if pdu["type"] == "m.room.create":
            self.create = pdu
        auth = {(self.events[a]["type"], self.events[a]["state_key"]): self.events[a] for a in pdu["auth_events"]}
        if self.create is not None:
            auth.setdefault(("m.room.create", ""), self.create)  # v12: implied, never listed
        try:
            self.check_auth(pdu, auth, self.room_version)
        except Exception as e:
            self.failures.append(f"{eid} {pdu['type']} from {pdu['sender']}: {type(e).__name__}: {e}")


def build(size: int, seed: int, args: argparse.Namespace) -> tuple[Dag, SynapseRoom, float, list[str]]:
    room = SynapseRoom(args.room_version, check_auth=not args.no_auth_check)
    events: dict[str, dict[str, Any]] = {}
    ours_check: OursAuthCheck | None = None
    if not args.no_auth_check:
        try:
            ours_check = OursAuthCheck(args.room_version, events)
        except ImportError:
            print("note: homeserver.protocol.auth_rules not importable; Synapse's auth checks only")

    def on_event(eid: str, pdu: dict[str, Any]) -> None:
        events[eid] = pdu
        room.add(eid, pdu)
        if ours_check is not None:
            ours_check(eid, pdu)

    cfg = GenConfig(
        n_events=size, room_version=args.room_version, seed=seed, branches=args.branches, merges=args.merges
    )
    t0 = time.perf_counter()
    dag = generate(cfg, resolver=room.resolve, on_event=on_event)
    return dag, room, time.perf_counter() - t0, ours_check.failures if ours_check else []


def bench_size(size: int, seed: int, args: argparse.Namespace, profile_out: list[str]) -> tuple[list[Row], int]:
    dag, room, gen_s, auth_failures = build(size, seed, args)
    if not args.json_only:
        print(
            f"# {size} events (room v{dag.room_version}, seed {seed}, {args.branches} branches): "
            f"generated and auth-checked in {gen_s:.1f} s",
            flush=True,
        )
    failures = 0
    if auth_failures:
        failures += len(auth_failures)
        print(f"\n!!! our auth rules rejected {len(auth_failures)} events that Synapse accepted:", file=sys.stderr)
        for f in auth_failures[:10]:
            print("  " + f, file=sys.stderr)

    rv, events = args.room_version, dag.events

    def ours(sets: Sequence[Mapping[StateKey, str]]) -> Mapping[StateKey, str]:
        return resolve_state(rv, sets, events)

    rows: list[Row] = []
    for m in dag.merges:
        keys, conflicted, full = conflict_stats(m, room)
        t_ours, t_syn = Timing(), Timing()
        # Warm-up (untimed): fills Synapse's store cache and gives the answers to compare.
        mine, theirs = ours(m.state_sets), room.resolve(m.state_sets)
        bad = 0
        if dict(mine) != dict(theirs):
            bad = report_mismatch(dag, m, mine, theirs)
            failures += 1
        for _ in range(args.runs):
            timed(ours, m.state_sets, t_ours)
            timed(room.resolve, m.state_sets, t_syn)
        row = Row(size, rv, seed, m.label, len(m.state_sets), keys, conflicted, full, t_ours, t_syn, not bad, bad)
        rows.append(row)
        if not args.json_only:
            print_row(row, flush=True)
    if args.profile and size == max(args.sizes) and seed == args.seeds[0]:
        prof = cProfile.Profile()
        prof.enable()
        ours(dag.final.state_sets)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
        profile_out.append(f"## cProfile of our resolver, {size} events, {dag.final.label}\n{buf.getvalue()}")
        prof.dump_stats(args.profile)
    return rows, failures


HEADER = (
    f"{'size':>6} {'seed':>4} {'merge':<22} {'sets':>4} {'confl':>6} {'full':>6} "
    f"{'ours wall':>10} {'ours cpu':>9} {'syn wall':>9} {'syn cpu':>8} {'syn/ours':>8} {'(cpu)':>7}  ok"
)


def print_row(r: Row, flush: bool = False) -> None:
    print(
        f"{r.size:>6} {r.seed:>4} {r.merge:<22} {r.state_sets:>4} {r.conflicted:>6} {r.full_conflicted:>6} "
        f"{r.ours.wall_median:>10.4f} {r.ours.cpu_median:>9.4f} {r.synapse.wall_median:>9.4f} "
        f"{r.synapse.cpu_median:>8.4f} {r.ratio:>7.2f}x {r.cpu_ratio:>6.2f}x  {'yes' if r.match else 'NO'}",
        flush=flush,
    )


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        out += range(int(lo), int(hi) + 1) if dash else [int(lo)]
    return out


def parse_sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        mult = 1000 if p.endswith("k") else 1
        out.append(int(float(p.rstrip("k")) * mult))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        default=[1000, 10000, 50000],
        help="comma-separated DAG sizes in events, e.g. 1000,10k,50k (default: all three)",
    )
    ap.add_argument("--room-version", default="10", help="room version (default 10; 12 uses state res v2.1)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per resolver and merge (median reported)")
    ap.add_argument(
        "--seeds",
        "--seed",
        type=parse_seeds,
        default=[1],
        help="generator seeds, e.g. 1 or 1-5 or 1,3 (default 1); each size is run for each seed",
    )
    ap.add_argument("--branches", type=int, default=4, help="concurrent branches (servers)")
    ap.add_argument("--merges", type=int, default=4, help="intermediate merges before the final one")
    ap.add_argument("--no-auth-check", action="store_true", help="skip the per-event auth checks")
    ap.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write results as JSON to PATH (or stdout, instead of the table, with no PATH)",
    )
    ap.add_argument(
        "--profile",
        metavar="PATH",
        help="cProfile our resolver on the largest size's final merge; print the top and save stats",
    )
    ap.add_argument(
        "--vectors",
        metavar="PATH",
        help="instead of benchmarking, write small rooms with Synapse's resolutions as test vectors",
    )
    args = ap.parse_args(argv)
    if args.vectors:
        return write_vectors(args.vectors)
    args.json_only = args.json == "-"
    if not synapse_supports(args.room_version):
        ap.error(f"the installed Synapse does not support room version {args.room_version}")

    if not args.json_only:
        print(
            f"state resolution: ours vs Synapse, room v{args.room_version}, median of {args.runs} runs "
            f"(seconds); confl = conflicted state events, full = full conflicted set"
        )
    rows: list[Row] = []
    failures = 0
    profiles: list[str] = []
    for seed in args.seeds:
        for size in args.sizes:
            if not args.json_only:
                print(HEADER)
            size_rows, size_failures = bench_size(size, seed, args, profiles)
            rows += size_rows
            failures += size_failures

    if not args.json_only:
        print("\nsummary (final merge of all branches):")
        print(HEADER)
        for r in rows:
            if r.merge.startswith("final"):
                print_row(r)
        for p in profiles:
            print("\n" + p)
    if args.json:
        doc = {
            "benchmark": "state_res",
            "room_version": args.room_version,
            "runs": args.runs,
            "seeds": args.seeds,
            "branches": args.branches,
            "python": sys.version.split()[0],
            "synapse_version": _synapse_version(),
            "all_match": failures == 0,
            "rows": [r.as_json() for r in rows],
        }
        text = json.dumps(doc, indent=2)
        if args.json_only:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if failures:
        print(f"\nFAILED: {failures} mismatch(es) or auth disagreement(s); see above", file=sys.stderr)
        return 1
    return 0


# --- test vectors -------------------------------------------------------------------------------

# Small rooms whose merges the pre-fix resolver got wrong (auth difference, power-event closure and,
# with the create event dropped from one state set, v12's implied create edge): room version, seed,
# events. Each generated with 3 branches and 2 intermediate merges.
VECTOR_ROOMS = (("10", 8, 100), ("10", 20, 100), ("12", 8, 100))
CREATE_KEY: StateKey = ("m.room.create", "")


def write_vectors(path: str) -> int:
    """Write small generated rooms with Synapse's resolution of each merge, for tests/unit.

    Each merge appears twice: as generated, and with the create event removed from the first state
    set (a malformed input, but one where Synapse's auth graph, the create event as an implied auth
    event in rooms v12 and a power event everywhere, shows). Our answers must equal Synapse's.
    """
    rooms: list[dict[str, Any]] = []
    mismatches = 0
    for rv, seed, size in VECTOR_ROOMS:
        room = SynapseRoom(rv)
        dag = generate(
            GenConfig(n_events=size, room_version=rv, seed=seed, branches=3, merges=2),
            resolver=room.resolve,
            on_event=room.add,
        )
        ids = list(dag.events)
        index = {event_id: i for i, event_id in enumerate(ids)}
        cases: list[dict[str, Any]] = []
        for m in dag.merges:
            without_create = [dict(s) for s in m.state_sets]
            without_create[0].pop(CREATE_KEY, None)
            for label, sets in ((m.label, m.state_sets), (f"{m.label}, no create event in set 0", without_create)):
                expected = room.resolve(sets)
                if dict(resolve_state(rv, sets, dag.events)) != expected:
                    print(f"!!! ours differs from Synapse: room v{rv} seed {seed}: {label}", file=sys.stderr)
                    mismatches += 1
                cases.append(
                    {
                        "label": label,
                        "state_sets": [sorted(index[e] for e in s.values()) for s in sets],
                        "expected": sorted(index[e] for e in expected.values()),
                    }
                )
        rooms.append(
            {
                "room_version": rv,
                "seed": seed,
                "n_events": size,
                "branches": 3,
                "merges": 2,
                "event_ids": ids,
                "events": [dag.events[e] for e in ids],
                "cases": cases,
            }
        )
    doc = {
        "_about": (
            "Derived, not from the spec: rooms generated by bench/dag_gen.py and resolved at every merge by "
            f"Synapse {_synapse_version()} (synapse.state.v2.resolve_events_with_store, in-process, "
            "bench/synapse_ref.py), written by `bench/state_res.py --vectors`. Events are unsigned PDUs with "
            "real content hashes and reference-hash ids (event_ids[i] is the id of events[i]). In each case, "
            "state_sets and expected hold indexes into events; a state maps each event's (type, state_key) "
            "to it. Regenerate with the command in bench/README.md."
        ),
        "rooms": rooms,
    }
    Path(path).write_text(_vector_json(doc))
    print(f"wrote {path}: {sum(len(r['cases']) for r in rooms)} cases in {len(rooms)} rooms")
    return 1 if mismatches else 0


def _vector_json(doc: Mapping[str, Any]) -> str:
    """JSON with one event, id or case a line, so that regenerated files diff readably."""

    def line(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    out = ["{", f'"_about":{line(doc["_about"])},', '"rooms":[']
    for r, room in enumerate(doc["rooms"]):
        out.append("{")
        for key in ("room_version", "seed", "n_events", "branches", "merges"):
            out.append(f'"{key}":{line(room[key])},')
        for key in ("event_ids", "events", "cases"):
            items = room[key]
            out.append(f'"{key}":[')
            out += [line(item) + ("," if i + 1 < len(items) else "") for i, item in enumerate(items)]
            out.append("]" + ("," if key != "cases" else ""))
        out.append("}" + ("," if r + 1 < len(doc["rooms"]) else ""))
    out += ["]", "}"]
    text = "\n".join(out) + "\n"
    json.loads(text)  # well-formed, or fail here rather than in the tests
    return text


def _synapse_version() -> str:
    from importlib.metadata import version

    return version("matrix-synapse")


if __name__ == "__main__":
    sys.exit(main())
