"""Online engine: per-entity Lua functions in Redis, one pipelined round trip per micro-batch.

Each (transaction, entity) is one FCALL (Redis >= 7.0 functions) that checks idempotency, updates the
entity's tiles and reads its features atomically. Keys carry a hash tag per entity (``fs:{c:<card>}:s``),
so every call touches one slot and the layout works on Redis Cluster. Commands are framed here and
sent through ``features.resp`` (replies parsed by hiredis) because redis-py's pipeline costs several times
more than Redis itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from features.calls import call_functions
from features.cluster import ClusterChannel, ClusterLane
from features.definitions import FEATURE_LIST, DelayedLabelRisk, FeatureList
from features.derive import RawGetter, derive_entity
from features.errors import FeatureScriptError
from features.events import LabelEvent, TransactionEvent
from features.plan import (
    EntityPlan,
    Plan,
    compile_plan,
    compute_stateless,
    to_cents,
)
from features.replication import ReplicaWait
from features.resp import OrderedLane, RespChannel, SentBatch, WireFactory, pack_commands

ENTITY_TAG = {"card": "c", "terminal": "t"}


def entity_keys(prefix: str, entity: str, entity_id: str) -> tuple[str, str, str]:
    """(state hash, expiry index, label ZSET) of one entity; all share the hash tag ``{c:<id>}``."""
    tag = f"{prefix}:{{{ENTITY_TAG[entity]}:{entity_id}}}"
    return f"{tag}:s", f"{tag}:x", f"{tag}:l"


def _lua_value(x: object) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int | float):
        return repr(x)
    if isinstance(x, list | tuple):
        return "{" + ", ".join(_lua_value(i) for i in x) + "}"
    if isinstance(x, dict):
        return "{" + ", ".join(f"[{_lua_value(k)}] = {_lua_value(v)}" for k, v in x.items()) + "}"
    msg = f"cannot express {x!r} in Lua"
    raise TypeError(msg)


def _lua_body(name: str) -> tuple[str, str]:
    """(leading comment, code) of a Lua source file; the code follows the ``--@CONFIG@`` line."""
    text = resources.files("features").joinpath(f"lua/{name}").read_text()
    head, _, body = text.partition("--@CONFIG@\n")
    return head, body


def _register(fname: str, config: list[str], body: str) -> str:
    # Constants are library-level locals (upvalues): built once at FUNCTION LOAD, not on every call as
    # they would be in an EVAL script. Naming the parameters KEYS and ARGV keeps the body script-like.
    inner = "\n".join("    " + line if line else line for line in body.rstrip("\n").split("\n"))
    register = f"redis.register_function('{fname}', function(KEYS, ARGV)"
    return "do\n" + "\n".join(config) + f"\n{register}\n{inner}\nend)\nend\n"


def entity_config(
    ep: EntityPlan, *, dedup_horizon_s: float, trim_every_s: float, trim_count: int, ttl_s: float
) -> list[str]:
    """The plan of one entity as Lua constants (the entity function's upvalues)."""
    label_levels = [ep.windows[op.window].level for op in ep.ops if isinstance(op.feature, DelayedLabelRisk)]
    # Per level, the bucket offsets (from the current bucket b) where window totals are read, newest
    # first: a window [b - delay - tiles + 1, b - delay] reads checkpoints at its two ends. Offset 1 (the
    # newer end of an undelayed window) is left out: no tile is newer than b, its totals are zero.
    checkpoints = [
        sorted(
            {o for w in ep.windows if w.level == lv for o in (-w.delay + 1, -w.delay - w.tiles + 1)} - {1},
            reverse=True,
        )
        for lv in range(len(ep.tile_s))
    ]
    cp_index: dict[tuple[int, int], int] = {}
    cp_first: list[int] = []
    cp_last: list[int] = []
    for lv, offs in enumerate(checkpoints):
        cp_first.append(len(cp_index) + 1)
        for off in offs:
            cp_index[(lv, off)] = len(cp_index) + 1
        cp_last.append(len(cp_index))
    # Flat tables only: the script body (with these constants) runs on every call.
    config: dict[str, object] = {
        "NLEVEL": len(ep.tile_s),
        "TILE": list(ep.tile_s),
        "RING": list(ep.ring),
        "NWIN": len(ep.windows),
        "WLEVEL": [w.level + 1 for w in ep.windows],
        "WTILES": [w.tiles for w in ep.windows],
        "WDELAY": [w.delay for w in ep.windows],
        "CPOFF": [off for offs in checkpoints for off in offs],
        "CPFIRST": cp_first,
        "CPLAST": cp_last,
        "DLV": {lv + 1: True for lv in ep.distinct_levels},
        "HAS_LABELS": ep.needs_labels,
        "LABEL_LEVEL": (min(label_levels) + 1) if label_levels else 1,
        "DEDUP_H": float(dedup_horizon_s),
        # A counterparty's last-seen field must outlive the tile it points into (see the tile rebuild).
        "CP_KEEP": float(ep.counterparty_keep_s),
        "TRIM_EVERY": float(trim_every_s),
        "TRIM_COUNT": trim_count,
        "TTL_MS": int(ttl_s * 1000),
        "TTL_REFRESH": 3600.0,
    }
    lines = [f"local {k} = {_lua_value(v)}" for k, v in config.items()]
    nlevel = len(ep.tile_s)
    lines += [
        f"local HDR, HUGE = {8 + nlevel}, 1 / 0",
        f"local HDRFMT = '<{'d' * (8 + nlevel)}'",
        # A tile: bucket and count int32, sums and min/max float64, distinct int32 ('i' is 4 bytes). An
        # int32 bucket holds event time / tile size up to 2**31: year 2038 even for 1-second tiles.
        f"local HDRB, TB, TILEFMT, TILEPACK = {8 * (8 + nlevel)}, 44, 'iiddddi', '<iiddddi'",
        # the byte after which the tile starting at element e of the unpacked blob begins (7 per tile)
        "local function AT(e) return HDRB + (e - HDR - 1) / 7 * TB end",
        # Scratch tables reused by every call (calls never overlap): building them per call cost more
        # than the arithmetic. AFZ stays all zeros: the label counts when an entity has no labels.
        "local CN, CS, CQ, CDL, CMN, CMX, PIECES, COUNTS, AFN = {}, {}, {}, {}, {}, {}, {}, {}, {}",
        f"local AFZ = {_lua_value([0] * len(ep.windows))}",
        # struct.unpack formats of the state blob by byte length (bounded by the rings' sizes)
        "local UNPACKFMT = {}",
        *_raw_output(ep, cp_index),
    ]
    return lines


def _raw_output(ep: EntityPlan, cp_index: dict[tuple[int, int], int]) -> list[str]:
    """Lua function RAWOUT(te, v, AF): the plan's raw statistics packed as float64s, in plan order.

    Generated as one expression per statistic, because a generic loop over opcodes cost more Redis CPU
    than the statistics themselves. Window w spans checkpoints lo (its oldest bucket) down to hi (one past
    its newest; zero, so omitted, for undelayed windows): sums are CP(lo) - CP(hi), min/max the running
    values at lo (see entity.lua); AF holds the
    known frauds per window; v is the old state (header: 2 = applied, 3 = last time, 4-6 = geo).
    """
    window = {"n": "CN", "s": "CS", "q": "CQ", "dl": "CDL"}
    special = {"dt": "(v[2] >= 1 and te - v[3] or -1)", "pgeo": "v[4]", "plat": "v[5]", "plon": "v[6]"}
    exprs = []
    for stat, w in ep.raw:
        if w < 0:
            exprs.append(special[stat])
            continue
        spec = ep.windows[w]
        lo = cp_index[(spec.level, -spec.delay - spec.tiles + 1)]
        if stat in window and spec.delay == 0:  # the newer end is checkpoint offset 1, always zero
            exprs.append(f"{window[stat]}[{lo}]")
        elif stat in window:
            hi = cp_index[(spec.level, -spec.delay + 1)]
            exprs.append(f"{window[stat]}[{lo}] - {window[stat]}[{hi}]")
        elif stat == "mn":
            exprs.append(f"CMN[{lo}]")
        elif stat == "mx":
            exprs.append(f"CMX[{lo}]")
        elif stat == "nf":
            exprs.append(f"AF[{w + 1}]")
        else:
            msg = f"no Lua expression for raw statistic {stat!r}"
            raise AssertionError(msg)
    lines = [f"local OUTFMT = '<{'d' * len(ep.raw)}'", "local function RAWOUT(te, v, AF)"]
    lines.append("  return struct.pack(OUTFMT,")
    lines += [f"    {e}," for e in exprs[:-1]] + [f"    {exprs[-1]})", "end"]
    return lines


def state_tag(features: FeatureList) -> str:
    source = "".join(_lua_body(name)[1] for name in ("entity.lua", "label.lua"))
    return hashlib.sha1((source + features.hash).encode()).hexdigest()[:8]


def function_library(
    plan: Plan, *, dedup_horizon_s: float, trim_every_s: float, trim_count: int, ttl_s: float
) -> tuple[str, list[str], str]:
    """(library source, entity function names in plan order, label function name).

    The library name carries a hash of its code, so a changed plan or setting loads beside the old one
    instead of silently replacing what a running worker still calls.
    """
    entity_head, entity_body = _lua_body("entity.lua")
    label_head, label_body = _lua_body("label.lua")
    chunks: list[tuple[str, list[str], str]] = [
        (
            ep.entity,
            entity_config(
                ep, dedup_horizon_s=dedup_horizon_s, trim_every_s=trim_every_s, trim_count=trim_count, ttl_s=ttl_s
            ),
            entity_body,
        )
        for ep in plan.entities
    ]
    chunks.append(("label", [f"local TTL_MS = {int(ttl_s * 1000)}"], label_body))
    digest = hashlib.sha1(repr(chunks).encode()).hexdigest()[:16]
    lib = f"fraudstream_features_{digest}"
    code = [f"#!lua name={lib}", entity_head, label_head]
    names = []
    for what, config, body in chunks:
        names.append(f"{lib}_{what}")
        code.append(_register(names[-1], config, body))
    return "\n".join(code), names[:-1], names[-1]


def _columns(ep: EntityPlan, table: npt.NDArray[np.float64]) -> RawGetter:
    index = {name: i for i, name in enumerate(ep.raw)}
    return lambda key: table[:, index[key]]


@dataclass(frozen=True, slots=True)
class _Inputs:
    """A batch's per-transaction numbers, as the scripts get them and as ``derive`` needs them."""

    amount: npt.NDArray[np.float64]
    cents: npt.NDArray[np.float64]
    times: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    numbers: npt.NDArray[np.float64]

    @classmethod
    def of(cls, events: Sequence[TransactionEvent]) -> _Inputs:
        n = len(events)
        amount = np.fromiter((e.amount for e in events), dtype=np.float64, count=n)
        cents = to_cents(amount).astype(np.float64)  # exact: |cents| < 2**53
        times = np.fromiter((e.event_time for e in events), dtype=np.float64, count=n)
        nan = float("nan")
        lat = np.fromiter((nan if e.latitude is None else e.latitude for e in events), np.float64, n)
        lon = np.fromiter((nan if e.longitude is None else e.longitude for e in events), np.float64, n)
        numbers = np.column_stack([times, cents, lat, lon, np.full(n, time.time())])
        return cls(amount, cents, times, lat, lon, numbers)


@dataclass(slots=True)
class PendingFeatures:
    """A batch submitted to Redis whose features are not collected yet."""

    inputs: _Inputs
    payload: bytes
    count: int
    sent: SentBatch | None = None


class RedisFeatureStore:
    """``OnlineFeatureStore`` on Redis.

    ``key_prefix`` isolates runs (parity uses its own); ``dedup_horizon_s`` is how long (event time,
    behind the entity's watermark) a transaction id is remembered for redelivery — at least that long,
    at most that plus ``trim_every_s``. ``ttl_s`` (wall clock) drops entities idle for longer.
    """

    def __init__(
        self,
        redis_client: aioredis.Redis | RedisCluster,
        *,
        features: FeatureList = FEATURE_LIST,
        key_prefix: str = "fs",
        dedup_horizon_s: float = 86_400.0,
        trim_every_s: float = 3 * 86_400.0,
        trim_count: int = 256,
        ttl_s: float | None = None,
        wire: WireFactory | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            msg = f"key_prefix {key_prefix!r} must not contain a hash tag"
            raise ValueError(msg)
        self.features = features
        self.plan: Plan = compile_plan(features)
        # Keys carry a tag of the state format (Lua code + feature definitions): a worker with another
        # layout never reads state it cannot parse; it starts a fresh keyspace (rebuild it from the topics).
        self.key_prefix = f"{key_prefix}:{state_tag(features)}"
        self.base_prefix = key_prefix
        ttl = ttl_s if ttl_s is not None else self.plan.retention_s + 2 * 86_400.0
        self._library, names, label_name = function_library(
            self.plan, dedup_horizon_s=dedup_horizon_s, trim_every_s=trim_every_s, trim_count=trim_count, ttl_s=ttl
        )
        self._functions = [n.encode() for n in names]
        self._label_function = label_name.encode()
        self._channel: RespChannel | ClusterChannel
        self._lane: OrderedLane | ClusterLane
        # With wait_replicas, every write round trip is confirmed by that many replicas before its replies
        # count (features/replication.py): a batch is acked only after its state is on a replica.
        replicas = ReplicaWait(wait_replicas, wait_timeout_ms, key_prefix) if wait_replicas else None
        self.replicas = replicas
        self._confirm_after_lane = False
        if isinstance(redis_client, RedisCluster):  # calls routed by slot (features/cluster.py)
            self._channel = ClusterChannel(redis_client, replicas=replicas)
            self._lane = ClusterLane(self._channel, confirm=True)
        else:
            self._channel = RespChannel(redis_client, wire=wire, replicas=replicas)
            self._lane = OrderedLane(redis_client, wire=wire)
            # the lane's connection carries the next batch behind this one: a WAIT on it would hold that
            # batch back; on one node a marker and WAIT on another connection cover the same writes
            self._confirm_after_lane = replicas is not None
        self._ne = len(self.plan.entities)

    async def load_scripts(self) -> None:
        """FUNCTION LOAD the library (again when Redis lost it, e.g. a restart without persistence)."""
        await call_functions(partial(self._channel.call_many,
                                     [[b"FUNCTION", b"LOAD", b"REPLACE", self._library.encode()]]))

    async def _run(self, payload: bytes, count: int) -> list[bytes | int]:
        return await self._replies(partial(self._channel.call_packed, payload, count, confirm=True))

    async def _replies(
        self, call: Callable[[], Awaitable[list[bytes | int]]], refused: Callable[[], None] = lambda: None
    ) -> list[bytes | int]:
        """``call()``'s replies; lost functions are reloaded and the batch replayed once (safe: every
        function is idempotent per transaction id). ``refused`` runs when Redis refused the batch."""
        return await call_functions(call, reload=self.load_scripts, refused=refused)

    def _transaction_payload(self, events: Sequence[TransactionEvent], numbers: npt.NDArray[np.float64]) -> bytes:
        """RESP frames of every (transaction, entity) FCALL, built with one %-format per command.

        ARGV: transaction id, the numbers of one row of ``numbers`` (event time, amount in cents,
        latitude, longitude, wall clock; NaN coordinates = missing) as 40 bytes of little-endian float64,
        counterparty. Binary because parsing five decimal numbers cost Redis more than the rest of the
        argument handling. This loop is the client's hot path (two commands per transaction), hence no
        per-argument calls.
        """
        formats = []
        for ep, fn in zip(self.plan.entities, self._functions, strict=True):
            nkeys = 3 if ep.needs_labels else 2
            head = b"*%d\r\n$5\r\nFCALL\r\n$%d\r\n%s\r\n$1\r\n%d\r\n" % (3 + nkeys + 3, len(fn), fn, nkeys)
            keys = b"$%d\r\n%s%s}:s\r\n$%d\r\n%s%s}:x\r\n"
            if ep.needs_labels:
                keys += b"$%d\r\n%s%s}:l\r\n"
            tail = b"%s$%d\r\n%s\r\n"
            tag = f"{self.key_prefix}:{{{ENTITY_TAG[ep.entity]}:".encode()
            formats.append((ep.entity == "card", ep.needs_labels, head + keys + tail, tag))
        packed = np.ascontiguousarray(numbers, dtype="<f8").tobytes()
        parts: list[bytes] = []
        for i, e in enumerate(events):
            tx = e.transaction_id.encode()
            args = b"$%d\r\n%s\r\n$40\r\n%s\r\n" % (len(tx), tx, packed[40 * i : 40 * i + 40])
            card, term = e.card_ref.encode(), e.terminal_id.encode()
            for is_card, labels, fmt, tag in formats:
                own, cp = (card, term) if is_card else (term, card)
                n = len(tag) + len(own) + 3
                if labels:
                    parts.append(fmt % (n, tag, own, n, tag, own, n, tag, own, args, len(cp), cp))
                else:
                    parts.append(fmt % (n, tag, own, n, tag, own, args, len(cp), cp))
        return b"".join(parts)

    async def apply_and_read(self, events: Sequence[TransactionEvent]) -> npt.NDArray[np.float64]:
        inputs = _Inputs.of(events)
        replies = await self._run(self._transaction_payload(events, inputs.numbers), len(events) * self._ne)
        return self._features(inputs, replies)

    async def submit(self, events: Sequence[TransactionEvent]) -> PendingFeatures:
        """Send the batch's state updates now, behind every batch submitted before it; ``collect`` reads
        its features. Submitting the next batch before collecting this one keeps Redis busy meanwhile."""
        inputs = _Inputs.of(events)
        payload = self._transaction_payload(events, inputs.numbers)
        pending = PendingFeatures(inputs, payload, len(events) * self._ne)
        if pending.count:
            pending.sent = await self._lane.send(payload, pending.count)
        return pending

    async def collect(self, pending: PendingFeatures) -> npt.NDArray[np.float64]:
        """The features of a submitted batch; batches are collected in the order they were submitted.
        Raises ``FeatureStoreUnavailable`` while Redis is away: call again, the batch is sent again."""
        if not pending.count:
            return self._features(pending.inputs, [])

        async def receive() -> list[bytes | int]:
            if pending.sent is None:
                pending.sent = await self._lane.send(pending.payload, pending.count)
            replies = await self._lane.receive(pending.sent)
            if self._confirm_after_lane:  # a shortfall raises; the retry reads the kept replies, confirms again
                await self._channel.call_packed(b"", 0, confirm=True)
            return replies

        def refused() -> None:
            # Redis refused the batch (its replies were read; later batches are unaffected): it is sent
            # again, behind the batches already sent after it, which see its transactions as late events
            # (docs/features.md). Only a restart that lost Redis's functions, or LOADING / BUSY / OOM.
            pending.sent = None

        return self._features(pending.inputs, await self._replies(receive, refused))

    def _features(self, inputs: _Inputs, replies: list[bytes | int]) -> npt.NDArray[np.float64]:
        n = len(inputs.amount)
        out = np.zeros((n, self.plan.width), dtype=np.float64)
        if n == 0:
            return out
        ne = self._ne
        for j, ep in enumerate(self.plan.entities):
            blob = b"".join(r for r in replies[j::ne] if isinstance(r, bytes))
            raw = np.frombuffer(blob, dtype="<f8")
            if raw.size != n * len(ep.raw):
                msg = f"{ep.entity} script returned {raw.size} values for {n} transactions"
                raise FeatureScriptError(msg)
            cols = derive_entity(ep, _columns(ep, raw.reshape(n, len(ep.raw))), inputs.cents, inputs.lat, inputs.lon)
            out[:, list(ep.columns)] = np.column_stack(cols)
        out[:, list(self.plan.stateless_columns)] = compute_stateless(self.plan, inputs.amount, inputs.times)
        return out

    async def apply_labels(self, labels: Sequence[LabelEvent]) -> None:
        """Store fraud labels for the terminals' delayed-label risk (non-fraud labels change nothing)."""
        cmds: list[list[bytes]] = []
        fn = self._label_function
        for lb in labels:
            if not lb.is_fraud:
                continue
            s, _, lab = entity_keys(self.key_prefix, "terminal", lb.terminal_id)
            cmds.append(
                [
                    b"FCALL",
                    fn,
                    b"2",
                    s.encode(),
                    lab.encode(),
                    lb.transaction_id.encode(),
                    repr(float(lb.event_time)).encode(),
                    repr(float(lb.available_at)).encode(),
                    b"1",
                ]
            )
        if cmds:
            await self._run(pack_commands(cmds), len(cmds))

    async def purge(self) -> int:
        """Delete every key under this store's prefix (SCAN + UNLINK; never FLUSHALL)."""
        return await self._channel.purge(f"{self.key_prefix}:*")

    async def close(self) -> None:
        await self._lane.close()
        await self._channel.close()
