"""The store's RESP batches on a Redis Cluster: each call sent to the primary that owns its key's slot.

redis-py's ``RedisCluster`` supplies the topology (slot map, nodes, their connection pools) and its
refresh; this module does what redis-py's cluster pipeline would do at several times the client CPU:
a batch already framed by the store (``features.online`` / ``features.ids``) is split by slot owner, each
node gets its calls as one pipelined write on one of its connections, all nodes in parallel
(``asyncio.gather``), and the replies are put back in the batch's order.

Order: calls of one entity share a hash tag, so a slot, so a node; they go in batch order on one connection,
and Redis runs one connection's commands in order: per-entity order holds. Batches run one after another.

Redirections and failures, and why a retry is safe:

- ``MOVED`` (slot migrated, or a replica promoted) and ``ASK`` (slot being migrated): Redis did not run the
  call. The topology is refreshed (``MOVED``) or the call sent with ``ASKING`` to the named node (``ASK``),
  and only those calls are sent again, in batch order.
- ``TRYAGAIN`` / ``CLUSTERDOWN`` / ``LOADING`` / ``MASTERDOWN`` / ``READONLY``: not run either; retried after
  a refresh and a short wait, within ``retry_window_s``.
- A connection lost mid-batch (a primary killed): some of that node's calls may have run. All of them are
  sent again after a refresh: every function the store calls is idempotent per transaction id (the entity
  functions keep the ids they applied and return the first vector for a repeat without changing state;
  a fraud label is stored per transaction id; an id claim of the same content answers ``repeat``, and
  ``outcome`` is HSETNX). Replication is asynchronous: a write acknowledged by a primary that dies before
  its replica got it is lost, unless the channel has a ``ReplicaWait`` (``features/replication.py``): a
  confirmed call then ends each node's round with a marker write and ``WAIT`` on the same connection, and
  the node's calls count as done only when enough replicas confirmed them. A round whose primary dies is
  sent again whole to the promoted replica and confirmed there; a shortfall raises ``ReplicasBehind``.

After every refresh the function libraries this channel loaded are loaded again on every primary (a
promoted replica has them through replication, a new node would not).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from features.replication import ReplicaWait
from features.resp import ScriptReplyError, SentBatch, classify, connection_stream, pack_commands

RETRYABLE = (b"MOVED", b"ASK", b"TRYAGAIN", b"CLUSTERDOWN", b"LOADING", b"MASTERDOWN", b"READONLY")
"""Error replies of a call that Redis did not run and will run later (elsewhere, or after a failover)."""

_LOST = (OSError, ConnectionError, RedisConnectionError, RedisTimeoutError)

Command = list[bytes]
Reply = bytes | int | hiredis.ReplyError


def parse_commands(payload: bytes, count: int) -> list[Command]:
    """The commands of a RESP-framed payload (request framing is RESP arrays of bulk strings)."""
    reader = hiredis.Reader()
    reader.feed(payload)
    commands: list[Command] = []
    for _ in range(count):
        cmd = reader.gets()
        if not isinstance(cmd, list):
            msg = f"payload holds {len(commands)} complete commands, {count} were announced"
            raise ValueError(msg)
        commands.append(cmd)
    return commands


def routing_key(cmd: Command) -> bytes | None:
    """The key that decides a command's slot; None for a command every primary gets (FUNCTION …)."""
    name = cmd[0].upper()
    if name in (b"FCALL", b"FCALL_RO", b"EVALSHA", b"EVAL"):
        return cmd[3] if int(cmd[2]) > 0 else None
    if name in (b"FUNCTION", b"SCRIPT", b"PING"):
        return None
    return cmd[1]


async def _node_round(
    node: ClusterNode, commands: Sequence[Command], asking: bool, tail: Sequence[Command] = ()
) -> list[Reply]:
    """One pipelined write of ``commands`` on one of ``node``'s connections and its replies, error replies
    in place. With ``asking`` every command is preceded by ASKING (its +OK is dropped). ``tail`` (the
    marker write and WAIT) follows on the same connection, as is; its replies come last."""
    framed: list[Command] = []
    for cmd in commands:
        if asking:
            framed.append([b"ASKING"])
        framed.append(cmd)
    framed.extend(tail)
    conn: Any = node.acquire_connection()
    try:
        await conn.connect()
        await conn.send_packed_command(pack_commands(framed), check_health=False)
        stream = connection_stream(conn)
        timeout = getattr(conn, "socket_timeout", None)
        timeout_s = float(timeout) if timeout else None
        reader = hiredis.Reader()
        replies: list[Reply] = []
        while len(replies) < len(framed):
            reply = reader.gets()
            if reply is False:
                # as features/resp.py: the socket timeout bounds the wait for the next bytes (a black-holed
                # node); a TimeoutError counts as a lost connection and the node's calls are sent again
                async with asyncio.timeout(timeout_s):
                    chunk = await stream.read(1 << 20)
                if not chunk:
                    msg = f"{node.name} closed the connection mid-batch"
                    raise ConnectionError(msg)
                reader.feed(chunk)
            elif reply is None:
                replies.append(b"")
            elif isinstance(reply, bytes | int | hiredis.ReplyError):
                replies.append(reply)
            else:
                msg = f"unexpected RESP reply {type(reply).__name__} from {node.name}"
                raise ConnectionError(msg)
    except BaseException:
        await conn.disconnect(nowait=True)  # half-read replies: never reuse this connection
        node.release(conn)
        raise
    node.release(conn)
    main, rest = replies[: len(framed) - len(tail)], replies[len(framed) - len(tail) :]
    return (main[1::2] if asking else main) + rest


class ClusterChannel:
    """``RespChannel`` on a Redis Cluster: ``call_packed`` / ``call_many`` / ``purge`` / ``close``."""

    def __init__(
        self, client: RedisCluster, *, retry_window_s: float = 30.0, replicas: ReplicaWait | None = None
    ) -> None:
        self._client = client
        self.retry_window_s = retry_window_s
        self.replicas = replicas
        """With ``confirm``, each node's round ends with the marker write and ``WAIT``."""
        self._marker_slots: dict[str, int | None] = {}  # node name -> a slot it owns (the marker's key)
        self.confirmed_rounds = 0
        """Node rounds whose writes the replicas confirmed (observability, and the WAIT tests)."""
        self._libraries: dict[bytes, Command] = {}  # FUNCTION LOAD commands, loaded again after a refresh
        self.refreshes = 0
        self.resent_after_loss = 0
        self.asked = 0
        """Calls sent again with ASKING to a slot's importing node."""
        """Calls sent again because their node's connection was lost (observability, and the failover test)."""

    async def _ready(self) -> None:
        if self._client.nodes_manager.default_node is None:
            await self._client.initialize()

    async def call_many(self, commands: Sequence[Sequence[bytes]], *, confirm: bool = False) -> list[bytes | int]:
        return await self.call_packed(pack_commands(commands), len(commands), confirm=confirm)

    async def call_packed(self, payload: bytes, count: int, *, confirm: bool = False) -> list[bytes | int]:
        """The replies of ``count`` RESP-framed commands, each run on its slot's primary. With ``confirm`` (and
        ``replicas``), a node's replies count only once its replicas confirmed the node's writes."""
        if not count:
            return []
        await self._ready()
        commands = parse_commands(payload, count)
        if all(routing_key(c) is None for c in commands):
            return await self._broadcast(commands)
        if any(routing_key(c) is None for c in commands):
            msg = "a cluster batch mixes keyed calls with calls for every primary"
            raise ValueError(msg)
        return await self._routed(commands, self.replicas if confirm else None)

    def _marker_tail(self, node: ClusterNode, first: Command, asking: bool, wait: ReplicaWait) -> list[Command]:
        """The marker write and WAIT for ``node``: the marker's key in a slot the node owns (its highest:
        ``redis-cli --cluster reshard`` moves a node's lowest slots first), else (an importing node that
        owns none yet) in the slot of the round's first call, after ASKING."""
        if node.name not in self._marker_slots:
            slots = self._client.nodes_manager.slots_cache
            self._marker_slots[node.name] = next(
                (s for s in range(16383, -1, -1) if (owners := slots.get(s)) and owners[0].name == node.name), None)
        slot = self._marker_slots[node.name]
        if slot is not None:
            return wait.commands(slot)
        key = routing_key(first)
        assert key is not None
        marker, wait_cmd = wait.commands(key_slot(key))
        return [*([[b"ASKING"]] if asking else []), marker, wait_cmd]

    async def _broadcast(self, commands: list[Command]) -> list[bytes | int]:
        """Every primary runs ``commands`` (FUNCTION LOAD); the first primary's replies are returned."""
        for cmd in commands:
            if cmd[0].upper() == b"FUNCTION" and len(cmd) > 1 and cmd[1].upper() == b"LOAD":
                self._libraries[cmd[-1].split(b"\n", 1)[0]] = cmd
        deadline = time.monotonic() + self.retry_window_s
        while True:
            primaries = self._client.get_primaries()
            results = await asyncio.gather(*(_node_round(n, commands, False) for n in primaries),
                                           return_exceptions=True)
            lost = [r for r in results if isinstance(r, _LOST)]
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, _LOST):
                    raise r
            if not lost:
                break
            if time.monotonic() > deadline:
                msg = f"redis cluster: {lost[0]}"
                raise RedisConnectionError(msg)
            await self._refresh(reload=False)
            await asyncio.sleep(0.25)
        first = results[0]
        assert isinstance(first, list)
        errors = [str(r).encode() for res in results if isinstance(res, list) for r in res
                  if isinstance(r, hiredis.ReplyError)]
        _raise(errors, len(commands))
        return [b"" if isinstance(r, hiredis.ReplyError) else r for r in first]

    async def _routed(self, commands: list[Command], wait: ReplicaWait | None = None) -> list[bytes | int]:
        count = len(commands)
        replies: list[bytes | int] = [b""] * count
        errors: list[bytes] = []
        todo = list(range(count))
        asking: dict[int, str] = {}  # call index -> node name that answered ASK for it
        deadline = time.monotonic() + self.retry_window_s
        last_problem = ""
        while todo:
            groups: dict[tuple[str, bool], list[int]] = {}
            nodes: dict[str, ClusterNode] = {}
            for i in todo:
                if i in asking:
                    node = self._client.get_node(node_name=asking[i])
                else:
                    key = routing_key(commands[i])
                    assert key is not None
                    node = self._client.get_node_from_key(key)  # type: ignore[arg-type]
                if node is None:  # an ASK target not in the topology yet
                    groups.setdefault(("", False), []).append(i)
                    continue
                nodes[node.name] = node
                groups.setdefault((node.name, i in asking), []).append(i)
            unroutable = groups.pop(("", False), [])
            order = list(groups)
            tails = {
                (name, ask): self._marker_tail(nodes[name], commands[groups[(name, ask)][0]], ask, wait)
                for name, ask in order
            } if wait is not None else {}
            results = await asyncio.gather(
                *(_node_round(nodes[name], [commands[i] for i in groups[(name, ask)]], ask, tails.get((name, ask), ()))
                  for name, ask in order),
                return_exceptions=True,
            )
            retry = list(unroutable)
            refresh = bool(unroutable)
            asking.clear()
            for (name, _ask), result in zip(order, results, strict=True):
                idxs = groups[(name, _ask)]
                if isinstance(result, _LOST):
                    # Some of these calls may have run: all are sent again (idempotent per transaction id).
                    retry += idxs
                    self.resent_after_loss += len(idxs)
                    refresh = True
                    last_problem = f"{name}: {result}"
                    continue
                if isinstance(result, BaseException):
                    raise result
                if wait is not None:
                    tail = result[len(idxs) :]
                    result = result[: len(idxs)]
                    marker = tail[-2]
                    if isinstance(marker, hiredis.ReplyError):
                        # the marker's slot moved (or is moving): its WAIT proves nothing; the node's calls
                        # are sent again (idempotent) with a marker in a slot of the refreshed topology
                        retry += idxs
                        refresh = True
                        last_problem = f"{name}: marker {marker}"
                        continue
                    # every other node's replies are dropped too: the caller sends the whole batch again
                    wait.check(tail[-1], f"redis cluster node {name}")
                    self.confirmed_rounds += 1
                for i, reply in zip(idxs, result, strict=True):
                    if not isinstance(reply, hiredis.ReplyError):
                        replies[i] = reply
                        continue
                    text = str(reply).encode(errors="replace")
                    if text.startswith(b"ASK "):
                        asking[i] = text.split()[2].decode()
                        retry.append(i)
                        self.asked += 1
                    elif text.startswith(RETRYABLE):
                        retry.append(i)
                        refresh = True
                        last_problem = text.decode(errors="replace")
                    else:
                        errors.append(text)
            todo = sorted(retry)  # batch order: per-entity order holds on the retry too
            if not todo:
                break
            if time.monotonic() > deadline:
                msg = f"{len(todo)} of {count} calls still refused after {self.retry_window_s:.0f}s: {last_problem}"
                raise ScriptReplyError(msg, noscript=False, transient=True)
            if refresh:
                await asyncio.sleep(0.1)
                await self._refresh()
        _raise(errors, count)
        return replies

    async def _refresh(self, *, reload: bool = True) -> None:
        """Read the topology again; load this channel's libraries on every primary of the new topology."""
        self.refreshes += 1
        self._marker_slots.clear()
        try:
            await self._client.nodes_manager.initialize()
        except RedisError:
            return  # the cluster is still electing: the caller retries within its window
        if reload and self._libraries:
            try:
                await self._broadcast(list(self._libraries.values()))
            except (RedisError, ScriptReplyError, *_LOST):
                return  # the next round trip fails again (NOSCRIPT) or refreshes again

    async def purge(self, pattern: str) -> int:
        deleted = 0
        await self._ready()
        for node in self._client.get_primaries():
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=pattern, count=1000, target_nodes=node):
                batch.append(key)
            for i in range(0, len(batch), 1000):
                # keys of different slots: one UNLINK each, pipelined per node by the channel
                replies = await self.call_many([[b"UNLINK", k] for k in batch[i : i + 1000]])
                deleted += sum(int(r) for r in replies if isinstance(r, int))
        return deleted

    async def close(self) -> None:
        """Nothing to release: the cluster client belongs to the caller."""


def _raise(errors: list[bytes], count: int) -> None:
    if errors:
        noscript, transient = classify(errors)
        msg = f"{len(errors)} of {count} commands failed, first: {errors[0].decode(errors='replace')}"
        raise ScriptReplyError(msg, noscript=noscript, transient=transient)


class ClusterLane:
    """``OrderedLane`` on a Redis Cluster: batches applied in the order they were sent.

    ``send`` only queues; ``receive`` runs every queued batch up to the one asked for, in order, through the
    ``ClusterChannel``. So on a cluster the next batch is not sent while the worker derives the last one's
    features (the single-node lane does that); a batch that fails stays queued and runs again first.
    """

    def __init__(self, channel: ClusterChannel, *, confirm: bool = False) -> None:
        self._channel = channel
        self._confirm = confirm
        self._queue: list[SentBatch] = []
        self._refused: dict[int, ScriptReplyError] = {}
        self._lock = asyncio.Lock()

    async def send(self, payload: bytes, count: int) -> SentBatch:
        batch = SentBatch(payload, count)
        self._queue.append(batch)
        return batch

    async def receive(self, batch: SentBatch) -> list[bytes | int]:
        async with self._lock:
            while batch.replies is None:
                if not self._queue:
                    msg = "this batch was not sent on this lane"
                    raise RuntimeError(msg)
                head = self._queue[0]
                try:
                    replies = await self._channel.call_packed(head.payload, head.count, confirm=self._confirm)
                except ScriptReplyError as exc:
                    # Redis answered with errors: the batch was read, as on the single-node lane
                    self._queue.pop(0)
                    head.replies = ([], [])
                    self._refused[id(head)] = exc
                    continue
                head.replies = (replies, [])
                self._queue.pop(0)
        refused = self._refused.pop(id(batch), None)
        if refused is not None:
            raise refused
        return batch.replies[0]

    async def close(self) -> None:
        self._queue.clear()
