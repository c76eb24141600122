#!/usr/bin/env python3
"""A non-Rust initiator: one transfer between two Ratify bank branches, from Python with grpcio.

Ratify is plain gRPC: an initiator in any language picks a transaction id (a UUIDv7), sends it
in the `ratify-txn-id` metadata of its calls to participant services, then asks any coordinator
node to Commit, and can ask Status later. This script generates its Python stubs from the
repository's .proto files at start (grpcio-tools; no system protoc).

What an initiator sends (docs/protocol.md W8, P10):
  - on every business call: `ratify-txn-id`, `ratify-deadline-ms`, and `ratify-call-id` — an id
    of its own for that call (here 1, 2, ...). A call retried after a lost answer carries the
    same call id: the participant answers it from the first attempt and never runs it twice.
  - on Commit: the participants, and `call_counts`, how many calls it made to each (every call
    counts, failed or not). A participant that did not complete exactly that many votes NO.
A call that fails dooms the transaction at that participant (unless the service declared the
error harmless: the error then carries `ratify-harmless`), so a Commit after a failed call
answers ABORTED, naming the participant and the call.

    python3 -m pip install grpcio grpcio-tools
    ratify demo --keep          # prints the coordinator and branch addresses
    python3 participant-sdk/bank-example/python/transfer.py \\
        --coordinator 127.0.0.1:PORT --eu 127.0.0.1:PORT --us 127.0.0.1:PORT \\
        --from-account acct-00001 --to-account acct-00002 --amount 250
"""

import argparse
import os
import secrets
import sys
import tempfile
import time
import uuid

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))
PROTOS = [
    "ratify/common/v1/common.proto",
    "ratify/coordinator/v1/coordinator.proto",
    "ratify/example/bank/v1/bank.proto",
]


def generate_stubs():
    out = tempfile.mkdtemp(prefix="ratify-py-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + PROTOS) != 0:
        sys.exit("generating the Python stubs failed")
    sys.path.insert(0, out)


def uuid7():
    """A time-ordered UUID (version 7), in the canonical lower-case text Ratify requires."""
    ms = int(time.time() * 1000) & ((1 << 48) - 1)
    rand_a = secrets.randbits(12)
    rand_b = secrets.randbits(62)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coordinator", required=True, help="any coordinator node, host:port")
    p.add_argument("--eu", required=True, help="the accounts-eu branch, host:port")
    p.add_argument("--us", required=True, help="the accounts-us branch, host:port")
    p.add_argument("--from-account", default="acct-00000")
    p.add_argument("--to-account", default="acct-00001")
    p.add_argument("--amount", type=int, default=100)
    args = p.parse_args()

    generate_stubs()
    from ratify.common.v1 import common_pb2
    from ratify.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc
    from ratify.example.bank.v1 import bank_pb2, bank_pb2_grpc

    txn_id = uuid7()
    deadline = int(time.time() * 1000) + 10_000
    eu = bank_pb2_grpc.BankStub(grpc.insecure_channel(args.eu))
    us = bank_pb2_grpc.BankStub(grpc.insecure_channel(args.us))
    coordinator = coordinator_pb2_grpc.CoordinatorStub(grpc.insecure_channel(args.coordinator))
    participants = ["accounts-eu", "accounts-us"]
    calls = {p: 0 for p in participants}
    next_call = [0]

    def call(participant, method, request):
        """One business call: the context, a new call id, counted for the Commit."""
        next_call[0] += 1
        calls[participant] += 1
        metadata = (
            ("ratify-txn-id", txn_id),
            ("ratify-deadline-ms", str(deadline)),
            ("ratify-call-id", str(next_call[0])),
        )
        return method(request, metadata=metadata, timeout=10)

    print(f"transaction {txn_id}: move {args.amount} from accounts-eu/{args.from_account} to accounts-us/{args.to_account}")
    try:
        left = call("accounts-eu", eu.Withdraw, bank_pb2.AmountRequest(account=args.from_account, amount=args.amount))
        right = call("accounts-us", us.Deposit, bank_pb2.AmountRequest(account=args.to_account, amount=args.amount))
        print(f"  staged: {left.account} -> {left.balance}, {right.account} -> {right.balance} (invisible until commit)")
    except grpc.RpcError as e:
        # Insufficient funds, no such account, a lock conflict: the branch that failed the call
        # has doomed the transaction (P10). Commit anyway, as an initiator that wants a
        # definite answer would: the coordinator aborts it, naming that branch and the call.
        print(f"  a leg failed: {e.code().name}: {e.details()}")

    reply = coordinator.Commit(
        coordinator_pb2.CommitRequest(
            txn_id=txn_id,
            participants=participants,
            deadline_unix_ms=deadline,
            call_counts=[calls[p] for p in participants],
        ),
        timeout=30,
    )
    outcome = common_pb2.Outcome.Name(reply.outcome)
    print(f"  Commit -> {outcome}")
    if reply.HasField("abort_info"):
        info = reply.abort_info
        print(f"    cause {common_pb2.AbortCause.Name(info.cause)}, participant {info.participant_id!r}, {info.message!r}")

    status = coordinator.Status(coordinator_pb2.StatusRequest(txn_id=txn_id), timeout=30)
    print(f"  Status -> {common_pb2.Outcome.Name(status.outcome)}, phase {coordinator_pb2.TxnPhase.Name(status.phase)}")
    return 0 if reply.outcome in (common_pb2.OUTCOME_COMMITTED, common_pb2.OUTCOME_ABORTED) else 1


if __name__ == "__main__":
    sys.exit(main())
